"""Great Expectations validation of the canonical tables.

``validate_tables(tables, params)`` runs the GX suites (see :mod:`.suites`) through GX
checkpoints and returns a :class:`ValidationOutcome` (verdict, JSON-able report, clean
tables, quarantined rows); :mod:`.report` writes and formats it. Importing this package
does not import Great Expectations; the first validation does (~3 s).
"""

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
    "ValidationOutcome",
    "build_suites",
    "format_markdown",
    "format_report",
    "quarantine_summary",
    "raise_if_failed",
    "validate_tables",
    "write_quarantine",
    "write_report",
]
