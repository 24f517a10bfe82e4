"""Typed params: params.yaml validated by pydantic models, one section per stage.

Every model forbids unknown keys, so a typo in params.yaml or in a
``--set key=value`` override fails loudly with the key's dotted path and what
was expected. Nothing here does I/O at import time; only entry points call
:func:`load_params`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from recpipe.errors import ConfigError

#: Environment variables that turn the stack's telemetry off: the Prefect server and
#: client, MLflow, BentoML, DVC. Every ``recpipe`` command sets them unless they are set
#: (:func:`telemetry_off`); ``make``, the tests and CI set them too.
TELEMETRY_OFF: dict[str, str] = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "true",  # Prefect client; MLflow accepts "true", not "1"
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "BENTOML_DO_NOT_TRACK": "true",  # only the string "true"
    "DVC_NO_ANALYTICS": "1",
}


def telemetry_off() -> None:
    """Set each of :data:`TELEMETRY_OFF` in ``os.environ`` that is not set already (a
    person's explicit choice wins). Call it before the tools are imported."""
    for key, value in TELEMETRY_OFF.items():
        os.environ.setdefault(key, value)


#: Raw data kinds `recpipe data import` understands (``synthetic`` is generated, not read).
SOURCE_KINDS: tuple[str, ...] = (
    "movielens-100k",
    "movielens-latest",
    "yoochoose",
    "session-tsv",
    "user-sequences",
    "diginetica",
    "retailrocket",
    "csv",
    "parquet",
    "jsonl",
)


#: The session split's item support when ``sessions.min_item_support`` is null (GRU4Rec).
DEFAULT_ITEM_SUPPORT = 5


class StrictModel(BaseModel):
    """Base of every params section: unknown keys are errors, values are re-validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ColumnMapping(StrictModel):
    """Which source column holds each canonical events column (generic CSV / Parquet)."""

    user_id: str | None = "user_id"
    item_id: str = "item_id"
    timestamp: str = "timestamp"
    event_type: str | None = "event_type"
    value: str | None = "value"
    session_id: str | None = "session_id"


class DataParams(StrictModel):
    """Where the raw data comes from (the ``ingest`` stage)."""

    source: Literal["synthetic", *SOURCE_KINDS] = "synthetic"  # type: ignore[valid-type]
    path: str | None = Field(
        default=None, description="raw data file or folder; unused for source=synthetic"
    )
    columns: ColumnMapping = Field(default_factory=ColumnMapping)
    sep: str = Field(default=",", description="field separator of a generic CSV")
    timestamp_unit: Literal["s", "ms", "us", "ns"] | None = Field(
        default=None, description="epoch unit of a numeric timestamp column; null = ISO strings"
    )
    default_event_type: str = Field(
        default="click", description="event type when the source has no event type column"
    )
    event_type_map: dict[str, str] = Field(
        default_factory=dict, description="extra raw -> canonical event type spellings"
    )
    items_path: str | None = Field(default=None, description="optional items table (csv)")
    jsonl_events: str = Field(
        default="events",
        description="jsonl: a line's list field of events (one session a line, as OTTO's); "
        "a line without it is one event",
    )


class SynthParams(StrictModel):
    """The synthetic click-stream generator (the default data of `make run`)."""

    seed: int = 42
    n_users: int = Field(default=2000, gt=0)
    n_items: int = Field(default=500, gt=1)
    n_categories: int = Field(default=20, gt=0)
    n_sessions: int = Field(default=10000, gt=0)
    mean_session_length: float = Field(default=6.0, gt=1.0)
    zipf_exponent: float = Field(default=1.1, gt=0.0)
    follow_probability: float = Field(
        default=0.7,
        ge=0.0,
        le=1.0,
        description="chance that the next item follows the current item's successor list",
    )
    n_successors: int = Field(
        default=4,
        ge=1,
        description="size of each item's fixed successor list (the learnable sequential signal)",
    )
    intent_probability: float = Field(
        default=0.6,
        ge=0.0,
        le=1.0,
        description="chance that a non-following item comes from the session's intent category "
        "(one of the user's preferred categories) rather than from global popularity",
    )
    cart_probability: float = Field(default=0.08, ge=0.0, le=1.0)
    purchase_probability: float = Field(default=0.3, ge=0.0, le=1.0)
    start: str = "2026-01-01T00:00:00Z"
    days: int = Field(default=30, gt=0)


class ValidateParams(StrictModel):
    """Great Expectations rules of the ``validate`` stage."""

    on_failure: Literal["fail", "quarantine"] = "fail"
    max_bad_fraction: float = Field(
        default=0.01, ge=0.0, le=1.0, description="quarantine only while at most this share is bad"
    )
    event_types: list[str] = Field(
        default_factory=lambda: ["view", "click", "cart", "purchase", "rating"]
    )
    rating_min: float = 0.5
    rating_max: float = 5.0
    min_timestamp: str = Field(default="1990-01-01T00:00:00Z", description="earliest sane event")
    max_future_seconds: int = Field(
        default=3600, ge=0, description="tolerated clock skew past now before an event is 'future'"
    )
    duplicates: Literal["allow", "forbid"] = Field(
        default="forbid",
        description="forbid: a repeated (user, item, timestamp, event_type, session) row is bad",
    )
    referential_integrity: bool = Field(
        default=True, description="every event item must be in the items table (when it has rows)"
    )

    @field_validator("event_types")
    @classmethod
    def _non_empty(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("event_types must list at least one event type")
        return v


SPLIT_KINDS: tuple[str, ...] = (
    "session",
    "global_temporal",
    "user_temporal",
    "leave_last_out",
    "cold_start",
)


class SessionsParams(StrictModel):
    """Sessionization, frequency filtering and splits (the ``sessions`` stage)."""

    use_source_sessions: bool = Field(
        default=True, description="keep the source's session ids where it has them"
    )
    event_types: list[str] | None = Field(
        default=None,
        description="event types kept for sessions and splits; null = all "
        "(e.g. [view] for the DIGINETICA view protocol)",
    )
    gap_minutes: float = Field(
        default=30.0, gt=0.0, description="inactivity gap that splits a user's stream"
    )
    collapse_repeats: bool = Field(
        default=False, description="merge immediate repeats of the same item in a session"
    )
    min_item_support: int | None = Field(
        default=None,
        ge=1,
        description="session split: drop items with fewer events (GRU4Rec preprocessing); "
        "null: 5, or 1 for prepared session-tsv data (already filtered: evaluated as given)",
    )
    test_items_seen_in: Literal["train", "train_valid"] | None = Field(
        default=None,
        description="session split: test events on items not seen in this part are dropped "
        "(train: the part models fit on; train_valid: also the validation days, as GRU4Rec's "
        "preprocessing, which filters test against train_full); null: train_valid for "
        "prepared session-tsv data (their official query count), else train",
    )
    min_item_support_all: int = Field(
        default=1,
        ge=1,
        description="drop items with fewer events before every split (1: the user splits keep "
        "every item)",
    )
    min_session_length: int = Field(
        default=2, ge=1, description="drop shorter sessions (session split only)"
    )
    min_test_sessions: int = Field(
        default=5,
        ge=0,
        description="session split: skip it (with the reason) when its test part has fewer "
        "sessions of 2+ events, or its sessions hold 1 event or fewer on average, e.g. "
        "rating data without sessions (0: never skip)",
    )
    splits: list[Literal[*SPLIT_KINDS]] = Field(  # type: ignore[valid-type]
        default_factory=lambda: list(SPLIT_KINDS),
        description="splits to build; one that does not apply to the data is skipped, with why",
    )
    test_days: float = Field(default=1.0, gt=0.0, description="session split: last N days test")
    valid_days: float = Field(
        default=1.0, ge=0.0, description="session split: the N days before test are validation"
    )
    global_test_fraction: float = Field(
        default=0.2, gt=0.0, lt=1.0, description="global temporal: share of events after cut-off"
    )
    global_valid_fraction: float = Field(
        default=0.1, ge=0.0, lt=1.0, description="global temporal: share before it for validation"
    )
    user_test_fraction: float = Field(
        default=0.2, gt=0.0, lt=1.0, description="per-user temporal: each user's last share"
    )
    user_valid_fraction: float = Field(
        default=0.1, ge=0.0, lt=1.0, description="per-user temporal: the share before it"
    )
    cold_item_fraction: float = Field(
        default=0.1,
        ge=0.0,
        le=1.0,
        description="cold start: share of the items with events after the global cut-off "
        "whose every train and valid event is removed",
    )
    cold_user_fraction: float = Field(
        default=0.1,
        ge=0.0,
        le=1.0,
        description="cold start: share of the users with events after the global cut-off "
        "whose every train and valid event is removed",
    )
    cold_seed: int = Field(default=0, ge=0, description="cold start: seed of the held-out draws")
    cold_anonymous: Literal["drop", "session"] = Field(
        default="session",
        description="cold start: events without a user are dropped, or each anonymous "
        "session counts as a user (session:<id>)",
    )

    @property
    def item_support(self) -> int:
        """The session split's ``min_item_support`` (:data:`DEFAULT_ITEM_SUPPORT` when
        unset; the sessions stage sets it from the data source first)."""
        return DEFAULT_ITEM_SUPPORT if self.min_item_support is None else self.min_item_support


class FeaturesParams(StrictModel):
    """Id maps, context and content features (the ``features`` stage)."""

    min_item_count: int = Field(
        default=1, ge=1, description="items seen fewer times in train map to the unknown slot"
    )
    min_user_count: int = Field(
        default=1, ge=1, description="users seen fewer times in train map to the unknown slot"
    )
    gap_buckets: int = Field(
        default=16, ge=2, description="log2 buckets of the time since the previous event"
    )
    text_buckets: int = Field(
        default=1 << 18, ge=16, description="feature-hashing space of text n-grams"
    )
    word_ngrams: list[int] = Field(default_factory=lambda: [1, 2])
    char_ngrams: list[int] = Field(default_factory=lambda: [3])
    hash_seed: int = Field(default=0, description="seed of the stable (not Python) hash")
    stream_min_rows: int = Field(
        default=20_000_000,
        ge=0,
        description="a split whose parts hold this many rows or more is encoded batch by "
        "batch (memory: the id maps and one batch); smaller ones are read whole, which is "
        "faster (0: always stream)",
    )


class EvaluateParams(StrictModel):
    """Baselines and metrics of the ``evaluate`` stage."""

    models: list[str] = Field(
        default_factory=lambda: [
            "pop",
            "recent_pop",
            "itemknn",
            "markov",
            "sr",
            "sknn",
            "stan",
            "ease",
            "rp3beta",
            "als",
            "bpr",
            "bias",
            "category_pop",
            "context_pop",
        ],
        description="registered models to fit and evaluate on every split",
    )
    model_configs: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="per-model options, e.g. {als: {factors: 32}}"
    )
    splits: list[Literal[*SPLIT_KINDS]] = Field(  # type: ignore[valid-type]
        default_factory=lambda: ["session", "user_temporal", "cold_start"],
        description="splits to evaluate on (those the sessions stage built)",
    )
    ks: list[int] = Field(default_factory=lambda: [5, 10, 20])
    primary_metric: str = Field(default="recall@20", description="the leaderboard's order")
    cold_users_given: int = Field(
        default=5,
        ge=1,
        description="cold_start split, cold_users protocol: a new user's first N test events "
        "are the request, the later ones the targets",
    )
    sampled_negatives: int = Field(
        default=0,
        ge=0,
        description="leave_last_out split: also rank each test target among N sampled items "
        "the user never touched (sampled<N>/hit@K; only to check against papers that report "
        "it: it mis-ranks models and is never gated); 0: off",
    )
    stream_min_rows: int = Field(
        default=10_000_000,
        ge=0,
        description="a user top-K split (user_temporal, global_temporal, leave_last_out) whose "
        "test part holds this many rows or more is read and ranked a block of users at a time "
        "(memory: the train part and one block; the same figures); smaller test parts are read "
        "whole (0: always by blocks)",
    )
    stream_block_rows: int = Field(
        default=2_000_000,
        ge=1,
        description="test events per block when the test part is read by blocks (a user's "
        "events are never split: a user with more is a block alone)",
    )

    @field_validator("ks")
    @classmethod
    def _cut_offs(cls, v: list[int]) -> list[int]:
        if not v or any(k < 1 for k in v):
            raise ValueError(f"ks must list cut-offs of 1 or more, e.g. [5, 10, 20]; got {v}")
        return v


#: The ranking metrics a ``metric@K`` param may name (those of
#: :mod:`recpipe.evaluate.metrics`; a test keeps the two in step).
RANKING_METRICS: tuple[str, ...] = (
    "hitrate",
    "recall",
    "recall_trunc",
    "precision",
    "mrr",
    "ndcg",
    "map",
)


def check_metric(value: str, ks: list[int], field: str) -> None:
    """``value`` is ``name@K`` with a ranking metric's name and K among ``ks``, else a
    ``ValueError`` naming both."""
    name, _, k = value.partition("@")
    if name not in RANKING_METRICS or not k.isdigit():
        raise ValueError(
            f"{field} must be metric@K with metric one of {list(RANKING_METRICS)}, e.g. "
            f"recall@20; got {value!r}"
        )
    if int(k) not in ks:
        raise ValueError(f"{field} {value!r} needs K={k} among evaluate.ks {ks}")


class TrainParams(StrictModel):
    """Deep candidates of the ``train`` stage (one dvc.yaml stage per candidate)."""

    candidates: list[str] = Field(
        default_factory=lambda: [
            "mf_bpr",
            "mf_wals",
            "wide_deep",
            "deepfm",
            "gru4rec",
            "gru4rec_ctx",
            "content2cf",
            "sasrec",
        ],
        description="registered models to train; each gets models/<name>/",
    )
    model_configs: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="per-model options, e.g. {mf_bpr: {factors: 32}}"
    )
    splits: list[Literal[*SPLIT_KINDS]] = Field(  # type: ignore[valid-type]
        default_factory=lambda: ["session", "user_temporal"],
        description="splits to train on (each model on those its queries suit)",
    )
    model_splits: dict[str, list[Literal[*SPLIT_KINDS]]] = Field(  # type: ignore[valid-type]
        default_factory=lambda: {
            "content2cf": ["user_temporal", "cold_start"],
            "sasrec": ["session"],
        },
        description="per-candidate splits instead of `splits`, e.g. content models on cold_start",
    )
    device: str = Field(default="auto", description="auto | cpu | cuda | cuda:N, for every model")
    max_epochs: int | None = Field(
        default=None, ge=1, description="cap on every candidate's epochs (null: their own)"
    )
    checkpoints: bool = Field(
        default=True, description="checkpoint each epoch; resume after a kill"
    )
    nproc: int = Field(
        default=1,
        ge=1,
        description="processes per candidate: > 1 trains each torch candidate with "
        "DistributedDataParallel under torchrun (gloo on CPU, NCCL on GPUs)",
    )


class GateParams(StrictModel):
    """Rules of the ``gate`` stage and the registry its decision moves (see recpipe.gates)."""

    split: Literal[*SPLIT_KINDS] | None = Field(  # type: ignore[valid-type]
        default="user_temporal",
        description="the one split candidates, baselines and the champion are compared on "
        "(the champion answers this split's queries: user_temporal = user top-K; session = "
        "next item); null = the evaluate stage's primary split (the first it built)",
    )
    metric: str | None = Field(
        default=None,
        description="metric@K the rules compare; null = evaluate.primary_metric (the metric "
        "the evaluate stage bootstraps, so any other value is an error)",
    )
    min_lift: float = Field(
        default=0.0,
        ge=0.0,
        description="relative lift the candidate needs over the best baseline (0.01 = 1%), "
        "besides a paired-bootstrap 95% interval of the difference above zero",
    )
    champion_tolerance: float = Field(
        default=0.01,
        ge=0.0,
        lt=1.0,
        description="relative shortfall allowed against the champion re-evaluated on the "
        "same split (0.01: at least 99% of its metric)",
    )
    latency_p99_ms: float = Field(
        default=50.0, gt=0.0, description="budget: p99 of one in-process request, top-K"
    )
    latency_k: int = Field(default=20, ge=1, description="K of the timed top-K requests")
    latency_requests: int = Field(
        default=200, ge=10, description="timed single requests (after 20 warm-up ones)"
    )
    max_artifact_mb: float = Field(
        default=200.0, gt=0.0, description="budget: size of the candidate's artifact (MiB)"
    )
    require_validation: bool = Field(
        default=True, description="the run's data validation must have passed"
    )
    registered_model: str = Field(
        default="recpipe",
        min_length=1,
        description="MLflow registered model holding every candidate as a version",
    )


class ServeParams(StrictModel):
    """The ``package`` stage and the service (``recpipe serve``); see recpipe.serve.

    The package stage copies these settings into the Bento's bundle, so a served model
    never reads params.yaml.
    """

    fallback: Literal["context_pop", "pop"] = Field(
        default="context_pop",
        description="cold-start fallback fitted beside the champion: contextual popularity "
        "(hour, weekday, event type, categories of the request's items) or plain popularity",
    )
    max_k: int = Field(default=100, ge=1, le=1000, description="largest k a request may ask")
    max_session_length: int = Field(
        default=50, ge=1, le=1000, description="most items a session (or context) may carry"
    )
    ann_min_items: int = Field(
        default=200_000,
        ge=1,
        description="catalogues with at least this many items use the faiss ANN index (the "
        "`ann` extra); smaller ones, or without faiss, exact top-K by a matrix product",
    )
    ann_index: Literal["ivf", "hnsw"] = Field(
        default="ivf", description="faiss index of large catalogues: IVF (k-means cells) or HNSW"
    )
    ann_nlist: int | None = Field(
        default=None, ge=1, description="IVF cells; null = sqrt(items), at most items / 39"
    )
    ann_nprobe: int = Field(default=32, ge=1, description="IVF cells searched per query")
    hnsw_m: int = Field(default=32, ge=4, description="HNSW links per node")
    hnsw_ef_search: int = Field(default=128, ge=1, description="HNSW search breadth")
    quantize: Literal["none", "int8"] = Field(
        default="none",
        description="int8: item vectors stored as 8-bit codes (4x smaller; the package stage "
        "reports the size and the recall@20 lost against float32)",
    )
    batch_max_size: int = Field(
        default=64, ge=1, description="most session requests scored together (adaptive batching)"
    )
    batch_max_wait_ms: float = Field(
        default=0.0,
        ge=0.0,
        le=100.0,
        description="wait for more requests before scoring a batch (0: score what has queued "
        "while the previous batch ran: batches grow with the load, no added latency when idle)",
    )
    max_request_bytes: int = Field(
        default=1_048_576,
        ge=1024,
        le=67_108_864,
        description="largest request body the service reads (bytes; larger: HTTP 413, refused "
        "from its Content-Length or as soon as the streamed body passes it)",
    )
    port: int = Field(default=3000, ge=1, le=65535, description="`recpipe serve` port")
    workers: int = Field(
        default=0,
        ge=0,
        le=64,
        description="`recpipe serve` worker processes; 0 = one per CPU core (one Python "
        "process answers HTTP on about one core)",
    )


class TrackingParams(StrictModel):
    """MLflow tracking: a SQLite store in the workspace unless a URI is given."""

    tracking_uri: str | None = Field(
        default=None, description="null = sqlite:///<workspace>/mlflow.db"
    )
    experiment: str = "recpipe"


class PrepParams(StrictModel):
    """How the ingest, validate and sessions stages process the events table.

    ``pandas`` holds the whole events table in memory (fast on small and medium logs).
    ``arrow`` streams it in record batches of ``batch_rows`` and processes it one
    user-hash partition at a time (``partitions`` of them), so peak memory is about one
    partition rather than the whole log: for logs that do not fit comfortably in pandas
    memory (e.g. 100M events). Both produce the same tables: ingest and validate write
    identical files; the sessions stage's arrow outputs hold the same rows grouped by
    partition (within a partition, in the pandas engine's order). ``csv`` and ``parquet``
    sources are streamed; the other source kinds are bounded and imported in memory.
    ``dask`` runs the arrow engine's per-partition steps as tasks on a Dask cluster: the
    scheduler at ``orchestration.dask_address``, else a temporary local cluster of
    ``workers`` processes. The per-partition work folders (the intermediate partitions
    the workers write and read) lie under ``data/``, or under ``work_url``: a folder
    every worker reaches, a path (e.g. an NFS mount) or a ``file:///abs/path`` URL, or
    a folder of an object store (``s3://bucket/prefix``, :mod:`recpipe.data.workfs`).
    ``data.path`` may be an fsspec URL (``s3://...``) for
    ``csv`` and ``parquet`` sources.
    """

    engine: Literal["pandas", "arrow", "dask"] = Field(
        default="pandas",
        description="pandas (in memory) | arrow (chunked, partitioned) | dask (arrow's "
        "partitions as tasks on a Dask cluster)",
    )
    partitions: int = Field(
        default=16, ge=1, description="arrow: user-hash partitions (memory ~ log / partitions)"
    )
    batch_rows: int = Field(
        default=1_000_000, ge=1, description="arrow: rows read at a time from a file"
    )
    workers: int = Field(
        default=2,
        ge=1,
        description="dask: worker processes of the temporary local cluster (unused with "
        "orchestration.dask_address)",
    )
    work_url: str | None = Field(
        default=None,
        description="arrow, dask: the folder of the per-partition work files every worker "
        "reaches: a path or file:///abs/path URL (a shared mount), or an object store's "
        "folder (s3://bucket/prefix; credentials from the environment); null = under data/",
    )


class TuneParams(StrictModel):
    """``recpipe tune``: Optuna studies with the same budget for every model."""

    use: bool = Field(
        default=False,
        description="train and evaluate with the tuned configs of tuned/<split>/<model>.yaml",
    )
    models: list[str] = Field(
        default_factory=list,
        description="models to tune; [] = every candidate and baseline with a search space",
    )
    split: Literal[*SPLIT_KINDS] | None = Field(  # type: ignore[valid-type]
        default=None, description="the split tuned on (its validation part); null = gate.split"
    )
    trials: int | None = Field(default=20, ge=1, description="finished trials per model")
    timeout: float | None = Field(default=None, gt=0, description="seconds per model")
    seed: int = Field(default=0, description="the TPE sampler's seed (and every trial's)")
    prune: bool = Field(default=True, description="stop hopeless trials from epoch metrics")
    every: int = Field(
        default=0,
        ge=0,
        description="the retraining flow tunes on its 1st run and every Nth after (0: never; "
        "tune by hand with `recpipe tune`); the other runs reuse the last tuned configs",
    )
    retune_growth: float | None = Field(
        default=None,
        gt=0,
        description="re-tune when the tuned split's train part grew by this share since its "
        "configs were tuned (0.5: by half); null: data growth alone never re-tunes",
    )
    workers: int = Field(
        default=1,
        ge=1,
        description="trials run in parallel on one study (seeded results reproduce at 1 only)",
    )
    parallel: Literal["processes", "dask"] = Field(
        default="processes",
        description="where parallel trials run: local worker processes, or the Dask cluster "
        "at orchestration.dask_address (else a local one of `workers` processes)",
    )
    storage: str | None = Field(
        default=None,
        description="Optuna RDB URL of the studies; null = sqlite:///<workspace>/tuning/"
        "optuna.db (Dask workers on other machines need a shared one, e.g. postgresql://)",
    )


class OrchestrationParams(StrictModel):
    """How the retraining flow runs its candidates (flows/retrain.py; no DVC stage reads it).

    ``sequential`` trains the candidates one after the other in the flow's process;
    ``dask`` fans them out with a Prefect Dask task runner, one candidate per worker
    process, and gathers the results before evaluation: on a temporary local Dask
    cluster of ``dask_workers`` processes with ``threads_per_worker`` threads each
    (also each worker's torch thread count), or on the running scheduler at
    ``dask_address`` (e.g. ``tcp://10.0.0.5:8786``).
    """

    task_runner: Literal["sequential", "dask"] = Field(
        default="sequential", description="sequential | dask (candidate fan-out)"
    )
    dask_address: str | None = Field(
        default=None, description="an existing Dask scheduler; null = a temporary local cluster"
    )
    dask_workers: int = Field(default=2, ge=1, description="worker processes of a local cluster")
    threads_per_worker: int = Field(
        default=1, ge=1, description="threads (and torch threads) per Dask worker"
    )
    record_lineage: bool = Field(
        default=True,
        description="commit the run's stages to dvc.lock (writing differing params into "
        "params.yaml first) and push them; false: a look-only run (`recpipe run --quick`) "
        "leaves dvc.lock and params.yaml as they are",
    )


#: ``recpipe run --quick`` (``make quick``): a first look in about a minute and a half on
#: two cores. The same stages on the same data, with two candidates (one per gate-able
#: split: mf_bpr on user_temporal, gru4rec on session) of at most 3 epochs, the cheap
#: baselines, no cold-start split, a short latency check, and no DVC lineage (so
#: params.yaml and dvc.lock stay the full run's). ``--set`` overrides go on top.
QUICK_OVERRIDES: tuple[str, ...] = (
    "sessions.splits=[session, user_temporal]",
    "train.candidates=[mf_bpr, gru4rec]",
    "train.max_epochs=3",
    "evaluate.models=[pop, itemknn, markov, sknn, ease]",
    "evaluate.splits=[session, user_temporal]",
    "gate.latency_requests=50",
    "orchestration.record_lineage=false",
)


class Params(StrictModel):
    """All of params.yaml."""

    data: DataParams = Field(default_factory=DataParams)
    synth: SynthParams = Field(default_factory=SynthParams)
    prep: PrepParams = Field(default_factory=PrepParams)
    validate_: ValidateParams = Field(default_factory=ValidateParams, alias="validate")
    sessions: SessionsParams = Field(default_factory=SessionsParams)
    features: FeaturesParams = Field(default_factory=FeaturesParams)
    train: TrainParams = Field(default_factory=TrainParams)
    evaluate: EvaluateParams = Field(default_factory=EvaluateParams)
    gate: GateParams = Field(default_factory=GateParams)
    tracking: TrackingParams = Field(default_factory=TrackingParams)
    serve: ServeParams = Field(default_factory=ServeParams)
    tune: TuneParams = Field(default_factory=TuneParams)
    orchestration: OrchestrationParams = Field(default_factory=OrchestrationParams)

    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True)

    @model_validator(mode="after")
    def _metrics_are_ranked(self) -> Params:
        ks = self.evaluate.ks
        check_metric(self.evaluate.primary_metric, ks, "evaluate.primary_metric")
        if self.gate.metric is not None:
            check_metric(self.gate.metric, ks, "gate.metric")
        return self

    def dump(self) -> dict[str, Any]:
        """Plain dict with params.yaml's key names (for logging and writing back)."""
        return self.model_dump(mode="json", by_alias=True)


def _format_validation_error(err: ValidationError, origin: str) -> str:
    lines = [f"invalid params ({origin}):"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "<root>"
        if e["type"] == "extra_forbidden":
            lines.append(f"  - {key}: unknown key (not a recpipe param; check the spelling)")
        else:
            got = e.get("input")
            lines.append(f"  - {key}: {e['msg']} (got {got!r})")
    return "\n".join(lines)


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``a.b.c=value`` into a key path and a YAML-typed value."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form key=value (e.g. synth.seed=7)")
    key, raw = text.split("=", 1)
    parts = [p for p in key.strip().split(".")]
    if not all(parts):
        raise ConfigError(f"override key {key!r} is not a dotted path like data.source")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: value {raw!r} is not valid YAML ({exc})") from exc
    return parts, value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of ``raw`` with each ``key=value`` override set (dicts created as needed)."""
    out: dict[str, Any] = _deep_copy(raw)
    for text in overrides:
        parts, value = parse_override(text)
        node = out
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                path = ".".join(parts[: i + 1])
                raise ConfigError(f"override {text!r}: {path} is a value, not a section")
            node = child
        node[parts[-1]] = value
    return out


def _deep_copy(d: dict[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, dict) else v for k, v in d.items()}


def params_from_dict(raw: dict[str, Any], origin: str = "params") -> Params:
    """Validate a plain dict into :class:`Params`, with a readable error."""
    try:
        return Params.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err, origin)) from None


def load_params(path: str | Path | None = None, overrides: list[str] | None = None) -> Params:
    """Read params.yaml (defaults when ``path`` is None), apply overrides, validate."""
    raw: dict[str, Any] = {}
    origin = "defaults"
    if path is not None:
        path = Path(path)
        if not path.exists():
            raise ConfigError(f"params file {str(path)!r} does not exist")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"params file {str(path)!r} is not valid YAML: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"params file {str(path)!r} must hold a mapping, got {loaded!r}")
        raw, origin = loaded, str(path)
    if overrides:
        raw = apply_overrides(raw, overrides)
        origin += " with overrides " + ", ".join(overrides)
    return params_from_dict(raw, origin)
