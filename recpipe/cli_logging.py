"""Log formatting of the ``recpipe`` command line.

A line logged inside a Prefect task run names the task run (``[train-mf_bpr-a1b]``): the
retraining flow (``flows/retrain.py``) marks each record made in a task run with
``task_run_name``, as Prefect's own task-run records already are. Recpipe's own errors
are logged without their traceback, as the command prints their message as its last
line (:func:`quiet_expected_tracebacks`). Nothing here imports Prefect.
"""

from __future__ import annotations

import logging

from recpipe.errors import RecpipeError

#: Plain lines (outside a terminal): date, level, logger, the task run, the message.
PLAIN_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(task_label)s%(message)s"
#: In a terminal Rich draws the time and the level itself.
RICH_FORMAT = "%(task_label)s%(message)s"


class TaskRunFormatter(logging.Formatter):
    """A :class:`logging.Formatter` whose format may use ``%(task_label)s``: ``"[NAME] "``
    for a record with a ``task_run_name``, else empty.

    Examples
    --------
    >>> record = logging.makeLogRecord({"msg": "training mf_bpr", "name": "recpipe.stages"})
    >>> TaskRunFormatter("%(name)s: %(task_label)s%(message)s").format(record)
    'recpipe.stages: training mf_bpr'
    >>> record.task_run_name = "train-mf_bpr-0a1"
    >>> TaskRunFormatter("%(name)s: %(task_label)s%(message)s").format(record)
    'recpipe.stages: [train-mf_bpr-0a1] training mf_bpr'
    """

    def format(self, record: logging.LogRecord) -> str:
        name = getattr(record, "task_run_name", None)
        record.task_label = f"[{name}] " if name else ""
        return super().format(record)


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
