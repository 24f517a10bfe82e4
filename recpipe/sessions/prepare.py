"""The body of the ``sessions`` stage on the pandas engine: sessionize, filter, split.

:func:`prepare_sessions` reads the validated events, sessionizes them, filters rare
items (``min_item_support_all``, 1 by default: none; the session split applies
``min_item_support`` itself), writes the sessionized events and every split's parts, and
returns the report that ``reports/splits.json`` holds (each split's statistics, dropped
counts with reasons, the leakage checks; a split that does not apply is reported as
skipped). It writes into the folders it is given; the stage function stages them and
swaps them in only when every split is done, as it does for the arrow engine
(:func:`recpipe.sessions.scaled.prepare_sessions_arrow`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from recpipe.config import SessionsParams

log = logging.getLogger(__name__)


def prepare_sessions(
    validated_dir: Path, events_out: Path, splits_out: Path, sp: SessionsParams
) -> dict[str, Any]:
    """Sessionize ``validated_dir``'s events into ``events_out``; write the splits under
    ``splits_out`` (one folder per split); return the report."""
    from recpipe.data.schema import read_tables
    from recpipe.sessions.parts import write_parts
    from recpipe.sessions.sessionize import filter_support, select_event_types, sessionize
    from recpipe.sessions.splits import SkippedSplit, check_leakage, iter_splits

    tables = read_tables(validated_dir)
    events, type_filter = select_event_types(tables.events, sp.event_types)
    events = sessionize(events, sp)
    events, filter_stats = filter_support(events, sp.min_item_support_all, 1)
    events_out.parent.mkdir(parents=True, exist_ok=True)
    events.to_parquet(events_out, index=False)
    splits_out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "events": len(events),
        "event_type_filter": type_filter,
        "filter": filter_stats,
        "splits": {},
    }
    for kind, result in iter_splits(events, sp):  # one split in memory at a time
        if isinstance(result, SkippedSplit):
            log.info("split %s skipped: %s", kind, result.reason)
            report["splits"][kind] = {"skipped": result.reason}
            continue
        out = splits_out / kind
        out.mkdir(parents=True)
        write_parts(result, out)  # the parts' rows are gathered here, one part at a time
        leakage = check_leakage(result, kind, sp.test_items_seen_in)
        report["splits"][kind] = {"stats": result.stats, "leakage": leakage}
        log.info(
            "split %s: %s train / %s valid / %s test events; leak-free: %s",
            kind,
            result.rows("train"),
            result.rows("valid"),
            result.rows("test"),
            all(leakage.values()),
        )
    return report
