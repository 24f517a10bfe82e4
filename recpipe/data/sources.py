"""The registry of raw-data importers and :func:`import_source`.

``SOURCES`` maps every kind of :data:`recpipe.config.SOURCE_KINDS` to an importer
``(path, options) -> CanonicalTables``:

==================  ==============================================================
kind                reads
==================  ==============================================================
movielens-100k      ``u.data`` + ``u.item`` + ``u.user`` (+ ``u.genre``)
movielens-latest    ``ratings.csv`` + ``movies.csv`` + ``tags.csv``
yoochoose           raw ``yoochoose-clicks.dat`` (+ ``yoochoose-buys.dat``)
session-tsv         prepared ``SessionId ItemId Time`` files (GRU4Rec / session-rec)
user-sequences      ``user item`` lines in time order, no timestamps (SASRec / BERT4Rec)
diginetica          ``(sample_)train-item-views.csv`` + ``train-purchases.csv`` +
                    ``product-categories.csv`` (+ ``products.csv``)
retailrocket        ``events.csv`` (+ ``item_properties*.csv``)
csv, parquet        any events table, through ``data.columns`` (a column mapping)
jsonl               JSON lines, flat or one session a line with an events array (OTTO)
==================  ==============================================================

``csv`` and ``parquet`` (:data:`URL_KINDS`) also read an fsspec URL
(``file:///abs/path``, ``s3://bucket/prefix``, ...; :mod:`recpipe.data.storage`); the
other kinds are bounded data sets read from local files.

The contract every importer keeps:

* event types are normalised with :func:`~recpipe.data.schema.normalise_event_types`
  and timestamps converted to UTC; ids become strings;
* rows are never dropped or repaired: null / negative ids, unknown event types,
  duplicates and out-of-range ratings are kept for validation to report;
* a *structural* problem -- a missing file, folder or column, an empty file, a
  line with the wrong number of fields (e.g. a truncated last line), unparsable
  timestamps, a non-integer id where the format has integer ids, UTF-16 or binary
  content -- raises :class:`~recpipe.errors.DataImportError` naming the file, the
  line or value and what was expected. Importers write nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from recpipe.config import DataParams, SynthParams
from recpipe.data.diginetica import import_diginetica
from recpipe.data.generic import import_csv, import_parquet
from recpipe.data.jsonl import import_jsonl
from recpipe.data.movielens import import_movielens_100k, import_movielens_latest
from recpipe.data.retailrocket import import_retailrocket
from recpipe.data.schema import CanonicalTables
from recpipe.data.sequences import import_user_sequences
from recpipe.data.storage import check_url, exists, is_url, location
from recpipe.data.yoochoose import import_session_tsv, import_yoochoose
from recpipe.errors import DataImportError

log = logging.getLogger(__name__)

#: An importer: raw path + data params -> canonical tables.
Importer = Callable[[Path, DataParams], CanonicalTables]

#: Source kinds whose ``data.path`` may be an fsspec URL rather than a local path.
URL_KINDS: tuple[str, ...] = ("csv", "parquet")

#: Importer of each data kind (keys are exactly :data:`recpipe.config.SOURCE_KINDS`).
SOURCES: dict[str, Importer] = {
    "movielens-100k": import_movielens_100k,
    "movielens-latest": import_movielens_latest,
    "yoochoose": import_yoochoose,
    "session-tsv": import_session_tsv,
    "user-sequences": import_user_sequences,
    "diginetica": import_diginetica,
    "retailrocket": import_retailrocket,
    "csv": import_csv,
    "parquet": import_parquet,
    "jsonl": import_jsonl,
}


def import_source(
    kind: str, path: str | Path, options: DataParams | None = None
) -> CanonicalTables:
    """Read a raw data set of ``kind`` at ``path`` into canonical tables.

    Parameters
    ----------
    kind:
        One of :data:`SOURCES` (``movielens-100k``, ``csv``, ...).
    path:
        The raw file or folder (what each kind expects is in its module docstring).
    options:
        Data params: the column mapping, separator, timestamp unit, default event
        type and extra event-type aliases (used by ``csv`` / ``parquet``; the event
        type aliases by every kind). ``None`` = defaults.

    Returns
    -------
    CanonicalTables
        With ``source`` = ``kind`` and ``input_files`` = the files read.

    Raises
    ------
    DataImportError
        Unknown kind, or a structural problem with the input (see the module docstring).
    """
    if kind not in SOURCES:
        raise DataImportError(f"unknown data kind {kind!r}; known: {sorted(SOURCES)}")
    if options is None:
        options = DataParams(source=kind, path=str(path))
    started = time.perf_counter()
    if is_url(path) and kind not in URL_KINDS:
        raise DataImportError(
            f"{kind}: {str(path)!r} is a URL; this source kind reads local files only "
            f"(sources that read URLs: {list(URL_KINDS)})"
        )
    tables = SOURCES[kind](location(path, "data.path"), options)
    tables.source = kind
    elapsed = time.perf_counter() - started
    n = len(tables.events)
    log.info(
        "imported %s from %s: %d events, %d items, %d users in %.2f s (%.0f events/s)",
        kind,
        path,
        n,
        len(tables.items),
        len(tables.users),
        elapsed,
        n / elapsed if elapsed > 0 else float("inf"),
    )
    return tables


def configured_path(data: DataParams, example: str = "../shared/data/ml-100k") -> str:
    """``data.path``, or a :class:`~recpipe.errors.ConfigError` saying it must be set.

    A URL (``protocol://path``, :mod:`recpipe.data.storage`) is checked here: a protocol
    fsspec knows, a path after it, and a source kind that reads URLs
    (:data:`URL_KINDS`); the other kinds read local files only.
    """
    from recpipe.errors import ConfigError

    if not data.path:
        raise ConfigError(
            f"data.path is not set; data.source={data.source!r} needs the path of the raw "
            f"data (e.g. --set data.path={example})"
        )
    path = str(data.path)
    if is_url(path):
        if data.source not in URL_KINDS:
            raise ConfigError(
                f"data.path {path!r} is a URL, but data.source={data.source!r} reads local "
                f"files only; expected a local path, or a source of {list(URL_KINDS)}"
            )
        check_url(path, "data.path")
        if data.items_path is not None and is_url(data.items_path):
            check_url(data.items_path, "data.items_path")
    return path


def preflight(data: DataParams) -> None:
    """Fail at once on a data path that cannot be read (before a run starts Prefect and
    MLflow, ~20 s): ``data.path`` set and existing for every source but ``synthetic``.
    What each source expects inside is checked by its importer.

    Raises
    ------
    ConfigError
        ``data.path`` is not set.
    DataImportError
        ``data.path`` does not exist.
    """
    if data.source == "synthetic":
        return
    url = configured_path(data)
    if is_url(url):
        if not exists(url):
            raise DataImportError(
                f"{data.source}: data.path {url!r} does not exist; point --set data.path=... "
                "at the raw data"
            )
        return
    path = Path(url)
    if not path.exists():
        raise DataImportError(
            f"{data.source}: data.path {str(path)!r} does not exist (looked from "
            f"{Path.cwd()}); point --set data.path=... at the raw data"
        )


def read_source(data: DataParams, synth: SynthParams) -> CanonicalTables:
    """The canonical tables of the configured source, in memory: the built-in synthetic
    click-stream (``data.source: synthetic``, from ``synth``) or ``data.path`` imported
    by :func:`import_source`."""
    if data.source == "synthetic":
        from recpipe.data.synth import generate

        log.info("generating synthetic click-stream (seed %d)", synth.seed)
        return generate(synth)
    path = configured_path(data)
    log.info("importing %s data from %s", data.source, path)
    return import_source(data.source, path, data)
