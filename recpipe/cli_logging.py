"""The console log format of the ``recpipe`` command.

A line logged inside a Prefect task run names the task run (``[train-mf_bpr-a1b]``): the
retraining flow (``flows/retrain.py``) marks each record made in a task run with
``task_run_name``, as Prefect's own task-run records already are. Nothing here imports
Prefect.
"""

from __future__ import annotations

import logging

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
