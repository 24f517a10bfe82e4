"""Great Expectations validation of the canonical tables.

``validate_tables(tables, params)`` runs the GX suites (see :mod:`.suites`) through GX
checkpoints and returns a :class:`ValidationOutcome` (verdict, JSON-able report, clean
tables, quarantined rows); :mod:`.report` writes and formats it. ``validate_partitioned``
(:mod:`.partitioned`) is the same for an events table larger than memory, one user-hash
partition at a time (``prep.engine: arrow``). Importing this package
does not import Great Expectations; the first validation does (~3 s).
"""

from recpipe.validation.partitioned import PartitionedOutcome, validate_partitioned
from recpipe.validation.report import (
    format_markdown,
    format_report,
    quarantine_summary,
    raise_if_failed,
    write_quarantine,
    write_report,
)
from recpipe.validation.runner import ValidationOutcome, validate_tables
from recpipe.validation.suites import DUPLICATE_KEY, build_suites

__all__ = [
    "DUPLICATE_KEY",
    "PartitionedOutcome",
    "ValidationOutcome",
    "build_suites",
    "format_markdown",
    "format_report",
    "quarantine_summary",
    "raise_if_failed",
    "validate_partitioned",
    "validate_tables",
    "write_quarantine",
    "write_report",
]
