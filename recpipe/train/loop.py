"""One training loop for every torch model in recpipe.

A model hands the loop its ``torch.nn.Module`` and three callables: ``batches(epoch)``
(one epoch of minibatches, a pure function of the epoch number and the model's seed),
``step(module, batch, device) -> (loss, n_examples)`` (the model's own step: its loss
on one batch) and optionally ``validate(module, device) -> {metric: value}``. The
loop does the rest:

- the gradient: ``loss.backward()`` after the step, or, when the model also hands a
  ``grad_step`` (same signature; it writes the gradient of its loss into every
  trainable parameter's ``.grad`` itself, e.g. in closed form, and returns the loss
  without a graph), that step instead of ``step`` and no backward pass. ``grad_step``
  runs in one process only: under DDP the gradients must go through DDP's all-reduce,
  so ``step`` and autograd run there. ``TrainResult.extra["gradient"]`` says which
  (``"grad_step"`` or ``"autograd"``);
- the update: the optimiser's dense step over every parameter, or, when the model
  hands a ``sparse_step`` (it returns the gradient as the distinct rows of each table
  it touched, :class:`~recpipe.train.sparse.RowGrad`) and the optimiser's update leaves
  rows with zero gradient unchanged (``adagrad``, ``sgd`` with ``momentum: 0``, no
  weight decay: :func:`~recpipe.train.sparse.row_sparse_reason`), the same update on
  those rows only (:class:`~recpipe.train.sparse.RowSparseStep`), with the same
  clipping and the optimiser's state updated in place (checkpointed as usual); in one
  process only. ``TrainResult.extra["update"]`` says which (``"rows"`` or ``"dense"``);
- device from the config (``auto``: CUDA when present), bf16 autocast on CUDA;
- seeding; on the CPU the same seed gives the same weights;
- optimiser (Adam, AdamW, Adagrad, SGD with ``momentum``), gradient clipping by
  global norm;
- a NaN or infinite loss raises :class:`~recpipe.errors.TrainingError` naming the
  epoch and the step;
- validation after each epoch, early stopping on the monitored metric with
  ``patience``, and the best epoch's weights restored at the end;
- a checkpoint after each epoch (written atomically: a temporary file renamed over
  the old one). A run that was killed (even SIGKILL mid-epoch) resumes from the last
  checkpoint whose fingerprint (model config and data) matches, trains only the
  epochs after it, and ends with the same weights as an uninterrupted run: the
  epoch's batches depend on the epoch number only, and the torch RNG state is
  checkpointed. The resume is logged and reported (``resumed_from_epoch`` in the
  summary). A checkpoint that cannot be read (truncated, foreign, from another
  version) is ignored with a warning and training starts from the first epoch;
- a rich progress bar when asked (the CLI) and one log line per epoch (which the
  Prefect flow forwards to its run logs); ``on_epoch`` receives each epoch's record
  (the train stage logs it to MLflow).

Under ``torchrun`` with a process group up (:mod:`recpipe.train.distributed`) the
same loop trains with DistributedDataParallel: every rank builds the epoch's global
minibatches and keeps its share (``shard``, or whole minibatches in turn), the step
runs inside DDP (gradients averaged), each rank's loss is weighted by its share of
the step's examples (one all-reduce of two numbers per step, which also makes a
non-finite loss stop every rank), validation runs on rank 0 and its metrics are
broadcast, so early stopping decides the same everywhere; only rank 0 writes
checkpoints, logs epochs and calls ``on_epoch``; every rank resumes from the
checkpoint (each with its own RNG state). The epoch's loss and example counts are
over all ranks.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from recpipe.errors import TrainingError
from recpipe.train import distributed as ddp
from recpipe.train.device import autocast, resolve_device, rng_state, seed_everything, set_rng_state
from recpipe.train.sparse import RowGrad, RowSparseStep, row_sparse_reason

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.pt"
#: What a checkpoint must hold to be resumed from.
CHECKPOINT_KEYS = frozenset(
    {
        "fingerprint",
        "epoch",
        "module",
        "optimizer",
        "history",
        "best_metric",
        "best_epoch",
        "best_state",
        "bad_epochs",
        "stopped_early",
        "rng",
    }
)
Batch = Any
StepFn = Callable[[torch.nn.Module, Batch, torch.device], tuple[torch.Tensor, int]]
#: A step that fills the trainable parameters' ``.grad`` itself (see :meth:`Trainer.fit`).
GradStepFn = StepFn
#: A step that returns its gradient as the rows it touched (see :meth:`Trainer.fit`).
RowSparseStepFn = Callable[
    [torch.nn.Module, Batch, torch.device], tuple[torch.Tensor, int, Sequence[RowGrad]]
]
ValidateFn = Callable[[torch.nn.Module, torch.device], Mapping[str, float]]
#: ``shard(batch, rank, world_size)``: this rank's part of a global minibatch.
ShardFn = Callable[[Batch, int, int], Batch]
#: Offset between the ranks' torch seeds (dropout and other in-step randomness).
RANK_SEED_STRIDE = 1_000_003
EpochCallback = Callable[[dict[str, Any]], None]


class TrainConfig(BaseModel):
    """Options of the training loop, shared by every torch model's config."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    epochs: int = Field(default=20, ge=1, description="most epochs to train")
    batch_size: int = Field(default=1024, ge=1, description="examples per minibatch")
    optimizer: Literal["adam", "adamw", "adagrad", "sgd"] = "adam"
    momentum: float = Field(
        default=0.9,
        ge=0,
        lt=1,
        description="SGD's momentum (optimizer: sgd only); 0: plain SGD, which (without "
        "weight_decay) moves only the rows that have a gradient",
    )
    learning_rate: float = Field(default=1e-3, gt=0)
    weight_decay: float = Field(default=0.0, ge=0, description="optimiser weight decay")
    grad_clip: float | None = Field(
        default=5.0, gt=0, description="clip the global gradient norm to this (null: off)"
    )
    patience: int | None = Field(
        default=3, ge=1, description="stop after this many epochs without improvement (null: off)"
    )
    device: str = Field(default="auto", description="auto | cpu | cuda | cuda:N")
    amp: bool = Field(default=True, description="bf16 autocast on CUDA (ignored on CPU)")

    @model_validator(mode="after")
    def _momentum_is_sgds(self) -> TrainConfig:
        if self.optimizer != "sgd" and self.momentum != 0.9:
            raise ValueError(
                f"momentum {self.momentum} applies to optimizer 'sgd' only, not "
                f"{self.optimizer!r} (expected optimizer: sgd, or momentum left at 0.9)"
            )
        return self

    def train_options(self) -> TrainConfig:
        """Just the loop's options (a model config subclassing this carries more)."""
        return TrainConfig(**{k: getattr(self, k) for k in TrainConfig.model_fields})


@dataclass
class TrainResult:
    """What a training run did."""

    history: list[dict[str, Any]]
    """One record per epoch: epoch, loss, examples, seconds, examples_per_s, metrics."""
    best_epoch: int | None
    best_metric: float | None
    monitor: str | None
    stopped_early: bool
    resumed_from: int | None
    """Epochs a checkpoint had completed when this run resumed from it (None: no resume);
    this run trained epochs ``resumed_from + 1`` onwards (1-based)."""
    device: str
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """JSON-able summary (no per-step data)."""
        return {
            "epochs": len(self.history),
            "best_epoch": self.best_epoch,
            "best_metric": self.best_metric,
            "monitor": self.monitor,
            "stopped_early": self.stopped_early,
            "resumed_from_epoch": self.resumed_from,
            "epochs_run": len(self.history) - (self.resumed_from or 0),
            "device": self.device,
            "seconds": round(self.seconds, 3),
            "history": self.history,
        }


def make_optimizer(config: TrainConfig, module: torch.nn.Module) -> torch.optim.Optimizer:
    """The optimiser that ``config`` names over ``module``'s parameters.

    The fused implementation (one kernel per parameter instead of a handful of
    elementwise passes, about half the optimiser time of a small model's CPU step) is
    used when every parameter is a dense floating-point tensor on the CPU or a CUDA
    device; the update is the same.
    """
    params = [p for p in module.parameters() if p.requires_grad]
    lr, wd = config.learning_rate, config.weight_decay
    fused = bool(params) and all(
        p.is_floating_point() and not p.is_sparse and p.device.type in ("cpu", "cuda")
        for p in params
    )
    options: dict[str, Any] = {"lr": lr, "weight_decay": wd, "fused": fused or None}
    if config.optimizer == "adam":
        return torch.optim.Adam(params, **options)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, **options)
    if config.optimizer == "adagrad":
        return torch.optim.Adagrad(params, **options)
    return torch.optim.SGD(params, momentum=config.momentum, **options)


def clip_grad_norm(module: torch.nn.Module, max_norm: float) -> None:
    """``torch.nn.utils.clip_grad_norm_(module.parameters(), max_norm)``, the same numbers.

    On the CPU the gradients are scaled only when the clip factor
    ``max_norm / (norm + 1e-6)`` is below 1: torch's function multiplies every gradient
    by the factor clamped to 1, and ``x * 1.0 == x``, so skipping that pass over every
    gradient changes nothing (and reading the norm costs no device sync on the CPU).
    On other devices torch's function runs as it is (no sync per step).
    """
    params = [p for p in module.parameters() if p.grad is not None]
    if not params:
        return
    if any(p.grad.device.type != "cpu" for p in params):
        torch.nn.utils.clip_grad_norm_(params, max_norm)
        return
    total = torch.nn.utils.get_total_norm([p.grad for p in params])
    if float(max_norm / (total + 1e-6)) < 1.0:
        torch.nn.utils.clip_grads_with_norm_(params, max_norm, total)


def save_file(obj: Any, path: Path | str) -> None:
    """``torch.save(obj)`` into the file ``path``, failing with the ``OSError`` itself; a
    SIGTERM during the write is acted on once it is done.

    Saving to a path, torch reports a permission or disk-full error as a
    ``RuntimeError`` without the path; through an open file they stay ``OSError``
    (``PermissionError``, ``ENOSPC``) and carry ``path``, which
    :class:`~recpipe.errors.WorkspaceError` turns into a readable message.
    """
    from recpipe.workspace import sigterm_held

    try:
        # a SIGTERM raised inside torch's zip writer broke it (its own RuntimeError
        # replaced the signal's exception): it is acted on once the file is written
        with sigterm_held(), open(path, "wb") as fh:
            torch.save(obj, fh)
    except OSError as exc:
        if exc.filename is None:
            exc.filename = str(path)
        raise


def _alive(pid: int) -> bool:
    """Whether a process with this id exists (signal 0 checks without sending)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def _state_copy(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


class _Progress:
    """A rich progress bar over the steps of each epoch (or nothing)."""

    def __init__(self, enabled: bool, name: str) -> None:
        self._bar = None
        self._name = name
        if enabled:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            self._bar = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("{task.fields[loss]}"),
                transient=False,
            )

    @contextlib.contextmanager
    def running(self) -> Iterator[_Progress]:
        if self._bar is None:
            yield self
            return
        with self._bar:
            yield self

    def epoch(self, epoch: int, epochs: int, total: int | None) -> Any:
        if self._bar is None:
            return None
        return self._bar.add_task(f"{self._name} {epoch + 1}/{epochs}", total=total, loss="")

    def advance(self, task: Any, loss: float | None) -> None:
        if self._bar is not None and task is not None:
            self._bar.update(task, advance=1, loss="" if loss is None else f"loss {loss:.4f}")


class Trainer:
    """Fit a module with the model's step, validating, checkpointing and stopping early.

    Parameters
    ----------
    config : TrainConfig
        Loop options (a model config that subclasses TrainConfig works too).
    seed : int
        Seed of torch's RNG for the run (weights init happens before, in the model).
    name : str
        Shown in logs, progress and errors.
    checkpoint_dir : Path, optional
        Where ``checkpoint.pt`` goes after each epoch; None: no checkpoints.
    fingerprint : str
        Identifies config + data; a checkpoint with another fingerprint is ignored.
    progress : bool
        Show a rich progress bar (for terminals).
    on_epoch : callable, optional
        Called with each epoch's record after validation.
    """

    def __init__(
        self,
        config: TrainConfig,
        *,
        seed: int = 0,
        name: str = "model",
        checkpoint_dir: Path | str | None = None,
        fingerprint: str = "",
        progress: bool = False,
        on_epoch: EpochCallback | None = None,
    ) -> None:
        self.config = config
        self.seed = int(seed)
        self.name = name
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.fingerprint = fingerprint
        self.progress = progress
        self.on_epoch = on_epoch
        self.device = resolve_device(ddp.worker_device(config.device))
        self.rank = ddp.rank()
        self.world_size = ddp.world_size()

    # checkpoints -----------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path | None:
        return self.checkpoint_dir / CHECKPOINT_FILE if self.checkpoint_dir is not None else None

    def _save_checkpoint(self, state: dict[str, Any]) -> None:
        path = self.checkpoint_path
        if path is None:
            return
        if self.world_size > 1:  # every rank's RNG (a collective), rank 0 writes
            state["rng_ranks"] = ddp.all_gather_object(state["rng"])
            if self.rank != 0:
                return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            save_file(state, tmp)
            os.replace(tmp, path)
        except BaseException:  # e.g. a full disk: leave the last good checkpoint, no debris
            tmp.unlink(missing_ok=True)
            raise

    def _remove_partial_checkpoints(self) -> None:
        """Remove temporary files that processes killed while saving left behind (those
        of this process and of processes that are gone; a live one's is its own)."""
        path = self.checkpoint_path
        if path is None or not path.parent.is_dir() or self.rank != 0:
            return
        for tmp in path.parent.glob(f".{path.name}.*.tmp"):
            pid = tmp.name.removeprefix(f".{path.name}.").removesuffix(".tmp")
            if pid.isdigit() and int(pid) != os.getpid() and _alive(int(pid)):
                continue
            log.debug("%s: removing a partial checkpoint %s", self.name, tmp)
            tmp.unlink(missing_ok=True)

    def _load_checkpoint(self) -> dict[str, Any] | None:
        path = self.checkpoint_path
        if path is None or not path.is_file():
            return None
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # a torn or foreign file: start afresh, say so
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            log.warning(
                "%s: ignoring unreadable checkpoint %s (%s: %s); training from the first epoch",
                self.name,
                path,
                type(exc).__name__,
                reason,
            )
            return None
        missing = sorted(CHECKPOINT_KEYS - set(state)) if isinstance(state, dict) else ["all"]
        if missing:
            log.warning(
                "%s: ignoring checkpoint %s that lacks %s (another recpipe version?); "
                "training from the first epoch",
                self.name,
                path,
                ", ".join(missing),
            )
            return None
        if state.get("fingerprint") != self.fingerprint:
            log.info(
                "%s: checkpoint %s is from another config or data; starting afresh", self.name, path
            )
            return None
        return state

    def clear_checkpoint(self) -> None:
        """Remove the checkpoint and any partial one (after a completed run)."""
        if self.rank != 0:
            return
        path = self.checkpoint_path
        if path is not None and path.exists():
            path.unlink()
        self._remove_partial_checkpoints()

    # the loop --------------------------------------------------------------------
    def fit(
        self,
        module: torch.nn.Module,
        *,
        batches: Callable[[int], Iterable[Batch]],
        step: StepFn,
        validate: ValidateFn | None = None,
        monitor: str | None = None,
        mode: Literal["max", "min"] = "max",
        n_batches: Callable[[int], int | None] | None = None,
        shard: ShardFn | None = None,
        grad_step: GradStepFn | None = None,
        sparse_step: RowSparseStepFn | None = None,
    ) -> TrainResult:
        """Train ``module`` in place; returns the history. The best epoch's weights
        (by ``monitor``) are in ``module`` at the end.

        ``shard(batch, rank, world_size)`` gives a rank its rows of a global minibatch
        under DDP; None: ranks take whole minibatches in turn
        (:func:`~recpipe.train.distributed.round_robin`). Unused in one process.

        ``grad_step(module, batch, device) -> (loss, n_examples)``, when given, replaces
        ``step`` + ``loss.backward()`` in one process: it must leave in ``.grad`` of
        every trainable parameter the gradient of the loss it returns (the loop sets
        the gradients to None before each step, then clips and steps the optimiser as
        usual). Under DDP (``world_size > 1``) it is not used: ``step`` runs inside DDP.

        ``sparse_step(module, batch, device) -> (loss, n_examples, row_grads)``, when
        given, replaces both in one process where the optimiser's update is row-sparse
        (:func:`~recpipe.train.sparse.row_sparse_reason`): ``row_grads`` is the whole
        gradient (every parameter and row they leave out has a zero gradient); the loop
        clips them by their global norm and updates those rows only, without touching
        ``.grad``.

        Raises
        ------
        TrainingError
            A loss is NaN or infinite (the message names epoch and step), or the
            validation does not report ``monitor``.
        """
        cfg = self.config
        device = self.device
        module.to(device)
        optimizer = make_optimizer(cfg, module)
        seed_everything(self.seed + RANK_SEED_STRIDE * self.rank)
        history: list[dict[str, Any]] = []
        best_metric: float | None = None
        best_epoch: int | None = None
        best_state: dict[str, torch.Tensor] | None = None
        bad_epochs = 0
        start_epoch = 0
        resumed_from: int | None = None
        stopped_early = False

        self._remove_partial_checkpoints()
        checkpoint = self._load_checkpoint()
        if checkpoint is not None:
            module.load_state_dict(checkpoint["module"])
            module.to(device)
            optimizer.load_state_dict(checkpoint["optimizer"])
            history = list(checkpoint["history"])
            best_metric = checkpoint["best_metric"]
            best_epoch = checkpoint["best_epoch"]
            best_state = checkpoint["best_state"]
            bad_epochs = int(checkpoint["bad_epochs"])
            stopped_early = bool(checkpoint["stopped_early"])
            ranks = checkpoint.get("rng_ranks")
            if self.rank == 0:
                set_rng_state(checkpoint["rng"])
            elif isinstance(ranks, list) and len(ranks) == self.world_size:
                set_rng_state(ranks[self.rank])
            else:  # written by fewer processes: this rank keeps its fresh seed
                log.info("%s: rank %d has no RNG state in the checkpoint", self.name, self.rank)
            start_epoch = resumed_from = int(checkpoint["epoch"]) + 1
            left = (
                "nothing left to train"
                if stopped_early or start_epoch >= cfg.epochs
                else f"training epochs {start_epoch + 1}-{cfg.epochs} only"
            )
            log.info(
                "%s: resumed from checkpoint %s at epoch %d/%d; %s",
                self.name,
                self.checkpoint_path,
                start_epoch,
                cfg.epochs,
                left,
            )

        runner: Callable[[Batch], tuple[torch.Tensor, int]]
        # The gradient's source, chosen once: the model's own grad_step in one process,
        # autograd over ``step`` otherwise (DDP must all-reduce the gradients itself).
        manual_grad = grad_step is not None and self.world_size == 1
        if self.world_size > 1:
            ddp.barrier()  # every rank has read the checkpoint before rank 0 writes one
            wrapped = ddp.wrap_step(module, step, device)

            def runner(batch: Batch) -> tuple[torch.Tensor, int]:
                return wrapped(batch, device)

            if shard is None:

                def local_batches(epoch: int) -> Iterable[Batch]:
                    return ddp.round_robin(batches(epoch), self.rank, self.world_size)

            else:

                def local_batches(epoch: int) -> Iterable[Batch]:
                    return (shard(b, self.rank, self.world_size) for b in batches(epoch))

        else:
            chosen = grad_step if grad_step is not None else step

            def runner(batch: Batch) -> tuple[torch.Tensor, int]:
                return chosen(module, batch, device)

            local_batches = batches
        # The update, chosen once: the model's row gradients and the optimiser's update
        # on those rows where that equals its dense step (one process), else dense.
        rows: _RowUpdate | None = None
        if sparse_step is not None and self.world_size == 1:
            reason = row_sparse_reason(optimizer)
            if reason is None:  # (built after the checkpoint's optimiser state is loaded)
                trainable = [p for p in module.parameters() if p.requires_grad]
                rows = _RowUpdate(sparse_step, RowSparseStep(optimizer, trainable))
                manual_grad = True
            else:
                log.debug("%s: dense optimiser step (%s)", self.name, reason)
        log.debug(
            "%s: gradients by %s, %s update",
            self.name,
            "grad_step" if manual_grad else "autograd",
            "row-sparse" if rows is not None else "dense",
        )

        main = self.rank == 0
        t_start = time.perf_counter()
        bar = _Progress(self.progress and main, self.name)
        with bar.running():
            for epoch in range(start_epoch, cfg.epochs):
                if stopped_early:
                    break
                record = self._epoch(
                    module,
                    optimizer,
                    epoch,
                    local_batches,
                    runner,
                    bar,
                    n_batches,
                    manual_grad,
                    rows,
                )
                if validate is not None:
                    module.eval()
                    metrics = None
                    if main:
                        with torch.no_grad(), autocast(device, cfg.amp):
                            metrics = {k: float(v) for k, v in validate(module, device).items()}
                    metrics = ddp.broadcast_object(metrics)  # one decision on every rank
                    record["metrics"] = metrics
                    if monitor is not None:
                        if monitor not in metrics:
                            raise TrainingError(
                                f"{self.name}: validation reported {sorted(metrics)}, not the "
                                f"monitored metric {monitor!r}"
                            )
                        value = metrics[monitor]
                        better = best_metric is None or (
                            value > best_metric if mode == "max" else value < best_metric
                        )
                        if better and math.isfinite(value):
                            best_metric, best_epoch, bad_epochs = value, epoch, 0
                            best_state = _state_copy(module)
                        else:
                            bad_epochs += 1
                        if cfg.patience is not None and bad_epochs >= cfg.patience:
                            stopped_early = True
                history.append(record)
                if main:
                    self._log_epoch(record, monitor)
                    if self.on_epoch is not None:
                        self.on_epoch(record)
                self._save_checkpoint(
                    {
                        "fingerprint": self.fingerprint,
                        "epoch": epoch,
                        "module": module.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "history": history,
                        "best_metric": best_metric,
                        "best_epoch": best_epoch,
                        "best_state": best_state,
                        "bad_epochs": bad_epochs,
                        "stopped_early": stopped_early,
                        "rng": rng_state(),
                    }
                )
        if best_state is not None:
            module.load_state_dict(best_state)
        module.eval()
        result = TrainResult(
            history=history,
            best_epoch=best_epoch,
            best_metric=best_metric,
            monitor=monitor,
            stopped_early=stopped_early,
            resumed_from=resumed_from,
            device=str(device),
            seconds=time.perf_counter() - t_start,
            extra={
                "world_size": self.world_size,
                "gradient": "grad_step" if manual_grad else "autograd",
                "update": "rows" if rows is not None else "dense",
            },
        )
        if stopped_early and main:
            log.info(
                "%s: early stop after epoch %d; best %s %.4f at epoch %d",
                self.name,
                history[-1]["epoch"] if history else -1,
                monitor,
                best_metric if best_metric is not None else float("nan"),
                best_epoch if best_epoch is not None else -1,
            )
        return result

    def _epoch(
        self,
        module: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        epoch: int,
        batches: Callable[[int], Iterable[Batch]],
        runner: Callable[[Batch], tuple[torch.Tensor, int]],
        bar: _Progress,
        n_batches: Callable[[int], int | None] | None,
        manual_grad: bool = False,
        rows: _RowUpdate | None = None,
    ) -> dict[str, Any]:
        cfg = self.config
        device = self.device
        module.train()
        task = bar.epoch(epoch, cfg.epochs, n_batches(epoch) if n_batches else None)
        # The epoch's loss sum: a Python float on the CPU (reading a CPU tensor costs no
        # sync; the same float64 sums as a tensor), a device tensor elsewhere (no sync
        # per step).
        on_cpu = device.type == "cpu"
        total: torch.Tensor | float = (
            0.0 if on_cpu else torch.zeros((), dtype=torch.float64, device=device)
        )
        examples = 0
        # on the CPU autocast is off: skip entering its context each step
        amp = device.type == "cuda" and cfg.amp
        show = bar._bar is not None
        t0 = time.perf_counter()
        world = self.world_size
        for i, batch in enumerate(batches(epoch)):
            blocks: Sequence[RowGrad] | None = None
            if rows is not None:  # the row-sparse update: no dense .grad to clear
                with autocast(device, cfg.amp) if amp else contextlib.nullcontext():
                    loss, count, blocks = rows.step(module, batch, device)
            else:
                optimizer.zero_grad(set_to_none=True)
                with autocast(device, cfg.amp) if amp else contextlib.nullcontext():
                    loss, count = runner(batch)
            loss = loss.float()
            value = float(loss.detach()) if on_cpu else None
            if on_cpu and world == 1:
                finite = math.isfinite(value)  # type: ignore[arg-type]
            else:
                finite = bool(torch.isfinite(loss)) or (world > 1 and count == 0)
            objective = loss
            if world > 1:
                # Weight by this rank's share of the step's examples: DDP averages the
                # gradients over ranks, so the result is the gradient of the mean loss
                # over all of the step's examples (the 1-process minibatch).
                both = torch.tensor(
                    [float(count), 0.0 if finite else 1.0], dtype=torch.float64, device=device
                )
                ddp.all_reduce_sum(both)
                n_all, bad_ranks = int(both[0]), int(both[1])
                if bad_ranks and finite:
                    raise TrainingError(
                        f"{self.name}: the loss is not finite on {bad_ranks} other rank(s) at "
                        f"epoch {epoch + 1}, step {i + 1}; lower learning_rate (now "
                        f"{cfg.learning_rate}) or set grad_clip (now {cfg.grad_clip})"
                    )
                weight = count * world / n_all if n_all else 0.0
                objective = torch.where(
                    torch.tensor(count > 0, device=loss.device), loss * weight, loss.new_zeros(())
                )
            if not finite:
                raise TrainingError(
                    f"{self.name}: the loss is {loss.item()} at epoch {epoch + 1}, step {i + 1}; "
                    f"lower learning_rate (now {cfg.learning_rate}) or set grad_clip "
                    f"(now {cfg.grad_clip})"
                )
            if blocks is not None:
                assert rows is not None
                if cfg.grad_clip is not None:
                    rows.update.clip(blocks, cfg.grad_clip)
                rows.update.step(blocks)
            else:
                if not manual_grad:  # a grad_step has filled .grad already
                    objective.backward()
                if cfg.grad_clip is not None:
                    clip_grad_norm(module, cfg.grad_clip)
                optimizer.step()
            if count:
                if on_cpu:
                    total += value * count  # type: ignore[operator]
                else:
                    total += loss.detach().double() * count
            examples += int(count)
            if show:
                bar.advance(task, value if on_cpu else float(loss.detach()))
        if world > 1:  # the epoch's loss and examples over every rank
            sums = torch.tensor([float(total), float(examples)], dtype=torch.float64)
            sums = sums.to(device)
            ddp.all_reduce_sum(sums)
            total, examples = float(sums[0].item()), int(sums[1].item())
        seconds = time.perf_counter() - t0
        mean = float(total) / examples if examples else float("nan")
        return {
            "epoch": epoch,
            "loss": mean,
            "examples": examples,
            "seconds": round(seconds, 4),
            "examples_per_s": examples / seconds if seconds > 0 else float("nan"),
        }

    def _log_epoch(self, record: Mapping[str, Any], monitor: str | None) -> None:
        metrics = record.get("metrics", {})
        shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())
        log.info(
            "%s epoch %d/%d: loss %.5f%s, %d examples in %.1f s (%.0f/s)",
            self.name,
            record["epoch"] + 1,
            self.config.epochs,
            record["loss"],
            f", {shown}" if shown else "",
            record["examples"],
            record["seconds"],
            record["examples_per_s"],
        )


@dataclass(frozen=True)
class _RowUpdate:
    """The row-sparse path: the model's step that returns row gradients, and the
    optimiser's update of those rows."""

    step: RowSparseStepFn
    update: RowSparseStep


def copy_config(config: TrainConfig, **changes: Any) -> TrainConfig:
    """``config`` with ``changes`` (validated)."""
    return type(config).model_validate({**config.model_dump(), **changes})
