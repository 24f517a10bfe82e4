"""Typed params: defaults, overrides, and errors that name the key and the expectation."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from recpipe.config import Params, apply_overrides, load_params, parse_override
from recpipe.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def test_params_yaml_spells_out_every_default() -> None:
    params = load_params(REPO / "params.yaml")
    assert params == Params()
    # every key of the model is written in params.yaml, so a person sees every knob
    written = yaml.safe_load((REPO / "params.yaml").read_text())
    assert _keys(written) == _keys(Params().dump())


def _keys(d: dict, prefix: str = "") -> set[str]:
    out = set()
    for k, v in d.items():
        out.add(prefix + k)
        if isinstance(v, dict) and k not in ("event_type_map",):
            out |= _keys(v, prefix + k + ".")
    return out


def test_override_sets_typed_values() -> None:
    params = load_params(
        None, ["synth.seed=7", "validate.on_failure=quarantine", "data.event_type_map={a: view}"]
    )
    assert params.synth.seed == 7
    assert params.validate_.on_failure == "quarantine"
    assert params.data.event_type_map == {"a": "view"}


def test_override_does_not_touch_the_input_dict() -> None:
    raw = {"synth": {"seed": 1}}
    apply_overrides(raw, ["synth.seed=2"])
    assert raw == {"synth": {"seed": 1}}


def test_unknown_key_names_its_path() -> None:
    with pytest.raises(ConfigError, match=r"synth\.sede: unknown key"):
        load_params(None, ["synth.sede=3"])


def test_mistyped_value_names_key_and_expectation(tmp_path: Path) -> None:
    bad = tmp_path / "params.yaml"
    bad.write_text("synth:\n  n_users: many\n")
    with pytest.raises(ConfigError) as err:
        load_params(bad)
    msg = str(err.value)
    assert "synth.n_users" in msg and "integer" in msg and "'many'" in msg


def test_bad_literal_lists_allowed_values() -> None:
    with pytest.raises(ConfigError, match=r"data\.source: .*'synthetic'.*got 'movielens'"):
        load_params(None, ["data.source=movielens"])


def test_value_out_of_range() -> None:
    with pytest.raises(ConfigError, match=r"validate\.max_bad_fraction"):
        load_params(None, ["validate.max_bad_fraction=1.5"])


@pytest.mark.parametrize("text", ["noequals", "=3", "a..b=1"])
def test_malformed_override(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_override(text)


def test_override_into_a_value_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"synth\.seed is a value, not a section"):
        load_params(REPO / "params.yaml", ["synth.seed.x=1"])


def test_missing_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_params(tmp_path / "nope.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_params(tmp_path / "list.yaml")
    (tmp_path / "broken.yaml").write_text("synth: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(tmp_path / "broken.yaml")


def test_telemetry_off_sets_unset_variables_and_keeps_explicit_ones(monkeypatch) -> None:
    import os

    from recpipe.config import TELEMETRY_OFF, telemetry_off

    for key in TELEMETRY_OFF:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "false")  # a person's explicit choice
    telemetry_off()
    assert os.environ["DO_NOT_TRACK"] == "true"
    assert os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"
    assert os.environ["MLFLOW_DISABLE_TELEMETRY"] == "false"
