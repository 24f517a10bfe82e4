"""Log formatting of the ``recpipe`` command line: no traceback for recpipe's own errors,
whose message the command prints as its last line (:func:`quiet_expected_tracebacks`)."""

from __future__ import annotations

import logging

from recpipe.errors import RecpipeError


class NoExpectedTraceback(logging.Formatter):
    """Formats like ``inner``, without the traceback of a recpipe error (an expected
    failure whose message the command prints as its last line); other tracebacks stay."""

    def __init__(self, inner: logging.Formatter | None) -> None:
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, RecpipeError):
            return self.inner.format(record)
        saved = record.exc_info, record.exc_text
        record.exc_info, record.exc_text = None, None
        try:
            return self.inner.format(record)
        finally:
            record.exc_info, record.exc_text = saved


def quiet_expected_tracebacks() -> None:
    """Keep the terminal free of tracebacks for recpipe's own errors.

    Prefect logs a failed task's and flow's exception with its traceback on its console
    handler; for a :class:`~recpipe.errors.RecpipeError` (bad data, a read-only
    workspace, ...) the message is enough, and ``_guard`` prints it. Prefect's API
    handler, which feeds the Prefect UI, keeps the full traceback.
    """
    loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
    for logger in loggers:
        for handler in getattr(logger, "handlers", []):
            if type(handler).__name__.endswith("APILogHandler"):
                continue
            if not isinstance(handler.formatter, NoExpectedTraceback):
                handler.setFormatter(NoExpectedTraceback(handler.formatter))
