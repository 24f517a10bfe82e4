"""Launch a recpipe command as a ``torchrun`` job (DistributedDataParallel training).

:func:`launch_torchrun` runs ``torchrun --standalone --nproc_per_node N -m recpipe.cli
...`` with the given params written to a temporary file, and turns a failed job into a
:class:`~recpipe.errors.StageError` with the end of its output. The ``train`` stage
calls it when ``train.nproc`` > 1 outside torchrun; inside the job each rank trains
(:mod:`recpipe.train.distributed`).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from recpipe.errors import StageError

log = logging.getLogger(__name__)

#: The MLflow run a torchrun job's rank 0 nests its candidate runs under.
PARENT_RUN_ENV = "RECPIPE_MLFLOW_PARENT_RUN"


def launch_torchrun(
    nproc: int,
    params: Mapping[str, Any],
    cli_args: list[str],
    *,
    parent_run_id: str | None = None,
) -> None:
    """Run ``python -m recpipe.cli *cli_args --params FILE`` as ``nproc`` processes.

    Parameters
    ----------
    nproc : int
        Processes (``--nproc_per_node``).
    params : mapping
        The run's params (params.yaml's layout), written to a temporary file that the
        job reads.
    cli_args : list[str]
        The command after ``recpipe``, e.g. ``["stage", "train", "--root", ROOT]``.
    parent_run_id : str, optional
        The MLflow run rank 0 nests its runs under (:data:`PARENT_RUN_ENV`).

    Raises
    ------
    StageError
        The job failed; the message holds the end of its output.
    """
    env = dict(os.environ)
    if parent_run_id is not None:
        env[PARENT_RUN_ENV] = parent_run_id
    with tempfile.TemporaryDirectory(prefix="recpipe-torchrun-") as tmp:
        params_file = Path(tmp) / "params.yaml"
        params_file.write_text(yaml.safe_dump(dict(params), sort_keys=False))
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            str(nproc),
            "-m",
            "recpipe.cli",
            *cli_args,
            "--params",
            str(params_file),
        ]
        log.info("running with %d processes: %s", nproc, " ".join(cmd))
        job = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if job.returncode != 0:
        tail = "\n".join((job.stderr or job.stdout).strip().splitlines()[-30:])
        raise StageError(
            f"distributed training (train.nproc={nproc}) failed with exit code "
            f"{job.returncode}; the end of its output:\n{tail}"
        )
