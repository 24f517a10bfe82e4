"""User-sequence files: one ``user item`` pair a line, each user's items in time order.

The format SASRec and BERT4Rec publish their preprocessed data in (e.g. the SASRec
authors' ``Video.txt``, Amazon Video Games): two whitespace-separated integer ids a
line, no header, no timestamps. The order of the lines is the only clock: the line
number becomes the timestamp (``2000-01-01T00:00:00Z`` plus one second a line), so
each user's events keep their order and the per-user splits (leave-last-out, per-user
temporal) cut them as the papers do. A user's lines one second apart make one session
under the default 30-minute gap. Every event is a ``click`` of value 1.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from recpipe.config import DataParams
from recpipe.data._io import Col, build_events, read_delimited, require_dir
from recpipe.data.schema import CanonicalTables
from recpipe.errors import DataImportError

log = logging.getLogger(__name__)

#: The timestamp of line 1; line n is n - 1 seconds later.
EPOCH = pd.Timestamp("2000-01-01", tz="UTC")
_EXPECTED = "one `user item` pair a line (e.g. SASRec's Video.txt)"


def import_user_sequences(path: Path, options: DataParams) -> CanonicalTables:
    """Import a user-sequence file (or the ``*.txt`` files of a folder, in name order,
    lines numbered across them); see the module docstring."""
    what = "user-sequences"
    path = Path(path)
    if path.is_file():
        files = [path]
    else:
        folder = require_dir(path, what, _EXPECTED)
        files = sorted(folder.glob("*.txt"))
        if not files:
            raise DataImportError(
                f"{what}: no *.txt file in folder {str(folder)!r}; expected {_EXPECTED}; the "
                f"folder holds {sorted(p.name for p in folder.iterdir())[:20]}"
            )
    parts, line = [], 0
    for file in files:
        frame = read_delimited(
            file,
            [Col("user_id", "int_id"), Col("item_id", "int_id")],
            sep=" ",
            names=["user_id", "item_id"],
            quoting=False,
            what=what,
        )
        n = len(frame)
        ts = pd.Series(EPOCH + pd.to_timedelta(range(line, line + n), unit="s"))
        line += n
        parts.append(build_events(frame["user_id"], frame["item_id"], ts, "click", 1.0))
        log.info("%s: %d events from %s", what, n, file)
    events = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
    return CanonicalTables(events=events, source=what, input_files=files)
