"""Distributed data-parallel training under ``torchrun`` (NCCL on GPUs, gloo on CPU).

The shared fit loop (:class:`recpipe.train.loop.Trainer`) trains one module per
process; this module holds what it needs to do that in step with other processes:

- the ``torchrun`` environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
  ``MASTER_ADDR`` / ``MASTER_PORT``): :func:`torchrun_env`, :func:`in_torchrun`;
- the process group: :func:`init`, :func:`shutdown`, the :func:`session` context
  (backend ``nccl`` when the device is CUDA, else ``gloo``; each rank uses GPU
  ``LOCAL_RANK``);
- helpers: :func:`rank`, :func:`world_size`, :func:`is_main`, :func:`barrier`,
  :func:`all_reduce_sum`, :func:`all_reduce_metrics`, :func:`broadcast_object`,
  :func:`all_gather_object`;
- how each rank takes its share of a minibatch (:func:`shard_rows`,
  :func:`round_robin`) and the :class:`torch.nn.parallel.DistributedDataParallel`
  wrapper of a model's custom step (:func:`wrap_step`).

Sharding (the decision the loop documents): a model's ``batches(epoch)`` is a pure
function of its seed and the epoch, so **every rank builds the same global minibatch
and keeps its own rows** (rank ``r`` of ``W`` the contiguous block
``[B r / W, B (r + 1) / W)``). Every rank therefore runs the same number of steps (no
padding, nothing dropped), the union of the ranks' rows is exactly the 1-process
minibatch (same sampled negatives too), and with the loss of each rank weighted by its
share of the global example count, the averaged DDP gradient is the 1-process
gradient up to the order of float summation. Session-parallel GRU4Rec batches are
sharded by lane: a rank owns lanes ``[B r / W, B (r + 1) / W)`` for the whole epoch,
hence the sessions that run in them, and keeps every lane's target as an in-batch
negative column. The cost is that building batches (numpy) is not split; the
module's forward and backward are. A model whose batches cannot be split by rows
(``ddp_sharding = "batches"``) falls back to :func:`round_robin`: rank ``r`` takes
minibatch ``i`` when ``i % W == r``, and the last ``n % W`` minibatches of an epoch
are dropped so that every rank runs the same number of steps.

Nothing here touches the process group at import time.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import socket
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from recpipe.errors import ConfigError

log = logging.getLogger(__name__)

#: Environment variables torchrun sets for every worker.
TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass(frozen=True, slots=True)
class TorchrunEnv:
    """A worker's place in a torchrun job."""

    rank: int
    world_size: int
    local_rank: int


def torchrun_env(environ: Mapping[str, str] | None = None) -> TorchrunEnv | None:
    """The torchrun variables of this process (None: not started by torchrun).

    Raises
    ------
    ConfigError
        A variable is set but not a non-negative integer, or ``RANK >= WORLD_SIZE``.
    """
    env = os.environ if environ is None else environ
    if not all(k in env for k in TORCHRUN_VARS):
        return None
    values: dict[str, int] = {}
    for key in TORCHRUN_VARS:
        try:
            values[key] = int(env[key])
        except ValueError:
            raise ConfigError(
                f"environment variable {key}={env[key]!r} is not an integer; torchrun sets it "
                "to a rank or process count"
            ) from None
    if values["WORLD_SIZE"] < 1 or not 0 <= values["RANK"] < values["WORLD_SIZE"]:
        raise ConfigError(
            f"RANK={values['RANK']} WORLD_SIZE={values['WORLD_SIZE']}: expected "
            "0 <= RANK < WORLD_SIZE"
        )
    return TorchrunEnv(values["RANK"], values["WORLD_SIZE"], values["LOCAL_RANK"])


def in_torchrun(environ: Mapping[str, str] | None = None) -> bool:
    """Whether this process is a torchrun worker."""
    return torchrun_env(environ) is not None


def is_initialized() -> bool:
    """Whether a process group is up."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if is_initialized() else 0


def world_size() -> int:
    """The number of processes (1 without a process group)."""
    return dist.get_world_size() if is_initialized() else 1


def is_main() -> bool:
    """Whether this process writes files, logs metrics and talks to MLflow (rank 0)."""
    return rank() == 0


def backend_for(device: str | torch.device) -> str:
    """``nccl`` for a CUDA device, ``gloo`` otherwise."""
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


def worker_device(device: str) -> str:
    """The device of this worker: ``cuda:LOCAL_RANK`` for ``auto`` / ``cuda`` on a GPU
    machine under torchrun, else ``device`` unchanged."""
    env = torchrun_env()
    if env is None or not torch.cuda.is_available():
        return device
    if device in ("auto", "cuda"):
        return f"cuda:{env.local_rank}"
    return device


def init(device: str = "auto", *, timeout_s: float = 600.0) -> bool:
    """Join the torchrun job's process group (no-op outside torchrun or when already up).

    The backend is ``nccl`` when ``device`` resolves to CUDA, else ``gloo``; on CUDA the
    worker's current device becomes ``cuda:LOCAL_RANK``.

    Returns
    -------
    bool
        True when this call created the group (the caller then calls :func:`shutdown`).
    """
    env = torchrun_env()
    if env is None or is_initialized():
        return False
    from datetime import timedelta

    from recpipe.train.device import resolve_device

    resolved = resolve_device(worker_device(device))
    backend = backend_for(resolved)
    if resolved.type == "cuda":
        torch.cuda.set_device(resolved)
    dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s))
    log.info(
        "distributed: rank %d of %d (local rank %d), backend %s, device %s",
        env.rank,
        env.world_size,
        env.local_rank,
        backend,
        resolved,
    )
    return True


def shutdown() -> None:
    """Leave and destroy the process group (no-op when none is up)."""
    if is_initialized():
        dist.destroy_process_group()


@contextlib.contextmanager
def session(device: str = "auto") -> Iterator[bool]:
    """Join the torchrun process group for the block (when under torchrun); yields
    whether a group is up."""
    created = init(device)
    try:
        yield is_initialized()
    finally:
        if created:
            shutdown()


def barrier() -> None:
    """Wait for every rank (no-op without a process group)."""
    if is_initialized():
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over the ranks in place (and return it)."""
    if is_initialized() and world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_reduce_metrics(
    metrics: Mapping[str, float], *, weight: float = 1.0, device: torch.device | None = None
) -> dict[str, float]:
    """Weighted mean of per-rank ``metrics`` over the ranks (every rank passes the same
    keys). ``weight``: this rank's weight (e.g. its example count)."""
    keys = sorted(metrics)
    if not (is_initialized() and world_size() > 1):
        return {k: float(metrics[k]) for k in keys}
    values = torch.tensor(
        [float(metrics[k]) * weight for k in keys] + [weight],
        dtype=torch.float64,
        device=device or torch.device("cpu"),
    )
    all_reduce_sum(values)
    total = float(values[-1])
    return {k: float(values[i]) / total if total else float("nan") for i, k in enumerate(keys)}


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` of rank ``src`` on every rank (picklable objects)."""
    if not (is_initialized() and world_size() > 1):
        return obj
    box = [obj if rank() == src else None]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order."""
    if not (is_initialized() and world_size() > 1):
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def free_port() -> int:
    """A free TCP port on the loopback interface (for a local rendezvous)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ---------------------------------------------------------------------- sharding
def row_bounds(n: int, rank: int, world_size: int) -> tuple[int, int]:
    """The contiguous block ``[lo, hi)`` of ``n`` rows that ``rank`` of ``world_size``
    keeps (sizes differ by at most one; a block is empty when ``n < world_size``)."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
    return n * rank // world_size, n * (rank + 1) // world_size


def _leading(batch: Any) -> int:
    if isinstance(batch, np.ndarray | torch.Tensor):
        return int(batch.shape[0])
    if isinstance(batch, tuple | list):
        return _leading(batch[0])
    if dataclasses.is_dataclass(batch):
        return _leading(getattr(batch, dataclasses.fields(batch)[0].name))
    if isinstance(batch, Mapping):
        return _leading(next(iter(batch.values())))
    raise TypeError(f"cannot shard a minibatch of type {type(batch).__name__} by rows")


def _slice(value: Any, lo: int, hi: int, n: int) -> Any:
    if isinstance(value, np.ndarray | torch.Tensor):
        if value.ndim == 0 or value.shape[0] != n:
            raise TypeError(
                f"cannot shard by rows: an array of shape {tuple(value.shape)} in a minibatch "
                f"of {n} rows (every array must have {n} rows)"
            )
        return value[lo:hi]
    if value is None:
        return None
    if isinstance(value, tuple | list):
        return type(value)(_slice(v, lo, hi, n) for v in value)
    if dataclasses.is_dataclass(value):
        return dataclasses.replace(
            value,  # type: ignore[type-var]
            **{
                f.name: _slice(getattr(value, f.name), lo, hi, n) for f in dataclasses.fields(value)
            },
        )
    if isinstance(value, Mapping):
        return {k: _slice(v, lo, hi, n) for k, v in value.items()}
    raise TypeError(f"cannot shard a minibatch field of type {type(value).__name__} by rows")


def shard_rows(batch: Any, rank: int, world_size: int) -> Any:
    """This rank's rows of a minibatch whose every array has the batch's B rows
    (an array, a tuple / list / dict of them, or a dataclass such as
    :class:`~recpipe.features.inputs.TripletBatch`); see :func:`row_bounds`.

    Raises
    ------
    TypeError
        An array of the batch does not have B rows (shard that model's batches itself).
    """
    n = _leading(batch)
    lo, hi = row_bounds(n, rank, world_size)
    return _slice(batch, lo, hi, n)


def round_robin(batches: Iterable[Any], rank: int, world_size: int) -> Iterator[Any]:
    """Rank ``rank``'s whole minibatches: those ``i`` with ``i % world_size == rank``,
    in full groups of ``world_size`` (the last ``n % world_size`` are dropped, so that
    every rank runs the same number of steps)."""
    group: list[Any] = []
    for batch in batches:
        group.append(batch)
        if len(group) == world_size:
            yield group[rank]
            group = []
    if group:
        log.debug("round-robin sharding dropped the last %d minibatch(es)", len(group))


# ---------------------------------------------------------------------- DDP
class StepModule(torch.nn.Module):
    """A module whose ``forward`` is a model's training step on the wrapped module.

    DistributedDataParallel synchronises the gradients of what runs inside its
    ``forward``; a recpipe model's step calls the module's own methods (``score_all``,
    ``train_step``, sub-embeddings for a penalty), not ``forward``, so the step itself
    becomes the forward of this wrapper and DDP wraps the wrapper. The parameters are
    the wrapped module's (``module.<name>`` in this wrapper's state dict).
    """

    def __init__(
        self,
        module: torch.nn.Module,
        step: Callable[[torch.nn.Module, Any, torch.device], tuple[torch.Tensor, int]],
    ) -> None:
        super().__init__()
        self.module = module
        self._step = step

    def forward(self, batch: Any, device: torch.device) -> tuple[torch.Tensor, int]:
        """The step's (loss, examples) on ``batch``."""
        return self._step(self.module, batch, device)


def wrap_step(
    module: torch.nn.Module,
    step: Callable[[torch.nn.Module, Any, torch.device], tuple[torch.Tensor, int]],
    device: torch.device,
) -> torch.nn.parallel.DistributedDataParallel:
    """``step`` on ``module`` as a DistributedDataParallel module (gradients averaged
    over the ranks in buckets during backward; rank 0's parameters broadcast now).

    ``device_ids`` stays unset (the step moves its numpy inputs itself), buffers are
    not broadcast each step (recpipe modules keep no running statistics; every rank
    builds the same ones) and ``find_unused_parameters`` is on only for modules with
    parameters a step may not reach (it costs a graph traversal per step): set the
    module attribute ``ddp_find_unused = True`` to ask for it. Sparse gradients
    (``nn.Embedding(sparse=True)``) are reduced by DDP as well; the fused optimisers
    see the averaged dense gradients, identical on every rank, so every rank takes
    the same step and parameters stay bit-identical across ranks.
    """
    import inspect

    ddp_cls = torch.nn.parallel.DistributedDataParallel
    options: dict[str, Any] = {
        "device_ids": None,
        "find_unused_parameters": bool(getattr(module, "ddp_find_unused", False)),
    }
    if "forward_sync_buffers" in inspect.signature(ddp_cls.__init__).parameters:
        options["forward_sync_buffers"] = False  # torch >= 2.13 (synced once at init)
    else:
        options["broadcast_buffers"] = False
    return ddp_cls(StepModule(module, step), **options)
