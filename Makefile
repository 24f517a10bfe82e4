# recpipe: `make run` runs the whole retraining flow on the default data,
# `make test` runs the test suite. Both create .venv and install when needed.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# telemetry off for every tool (tests, CI and the main job)
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := true
export MLFLOW_DISABLE_TELEMETRY := true
export BENTOML_DO_NOT_TRACK := true
export DVC_NO_ANALYTICS := 1
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 90
export OPENBLAS_NUM_THREADS := 1

.PHONY: install run quick test lint format bench clean exp

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e ".[dev,ann,scale]"
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/recpipe run

# a first look (about 1.5 min on 2 cores): recpipe run --quick
quick: $(STAMP)
	$(BIN)/recpipe run --quick

test: $(STAMP)
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP)
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/train.py

# `dvc exp show` with the columns people read (it has ~180: every param, dependency, model)
EXP_COLUMNS := ^(Experiment|Created|split|metric|passed|candidate|candidate_value|best_baseline|best_baseline_value|data\.source|synth\.seed|train\.max_epochs|evaluate\.primary_metric)$$
exp: $(STAMP)
	$(BIN)/dvc exp show --drop '.*' --keep '$(EXP_COLUMNS)'

clean:
	rm -rf data/interim data/validated data/quarantine reports mlruns mlflow.db mlflow.db.lock models checkpoints bentos tuning tuned
