"""The base of every torch model: the contract's hooks on top of the shared training loop.

A torch model subclasses :class:`TorchRecommender` and provides

- ``_build_module()``: a fresh ``torch.nn.Module`` (sizes from ``self.meta``);
- ``_prepare(train, valid)``: numpy arrays its batches need (called once per fit);
- ``_batches(epoch)``: one epoch of minibatches, a pure function of the epoch and
  ``config.seed`` (so that a resumed run sees the same batches);
- ``_step(module, batch, device) -> (loss, n_examples)``: its loss on one batch;
- ``_score_tensor(module, queries, device) -> (B, n_items)`` tensor of scores;

and optionally ``_validator(train, valid)`` (default: Recall@20 of user queries on the
validation part's new items, for early stopping), ``_save_extra`` / ``_load_extra``
for state that is not in the module (e.g. a lookup table), and ``_grad_step()``: a step
that writes its loss's gradient into the parameters' ``.grad`` itself (e.g. in closed
form, without an autograd graph), or None (the default) where autograd over ``_step``
should run; the loop uses it in one process only (see :meth:`Trainer.fit
<recpipe.train.loop.Trainer.fit>`); and ``_row_sparse_step()``: a step that returns the
gradient as the rows it touched, for optimisers whose update is row-sparse
(:mod:`recpipe.train.sparse`).

Under ``torchrun`` (DistributedDataParallel, :mod:`recpipe.train.distributed`), a
model whose ``ddp_sharding`` is ``"rows"`` trains each rank on its rows of the same
global minibatch (:meth:`TorchRecommender._shard_batch`, by default
:func:`~recpipe.train.distributed.shard_rows`), which matches the 1-process run up to
float summation order (every recpipe model: those whose batches are not plain
row-aligned arrays override ``_shard_batch``); ``"batches"`` (the default, for a new
model that has not defined its row shards) has ranks take whole minibatches in turn.

:meth:`TorchRecommender.fit` takes, beyond the contract's ``(train, valid)``, a
checkpoint folder (resume after a kill), a progress flag and a per-epoch callback;
the train stage passes them. The artifact holds ``weights.pt`` (the module's state
dict, read back with ``torch.load(weights_only=True)``).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal, Self

import numpy as np
import scipy.sparse as sp
import torch
from pydantic import ConfigDict, Field

from recpipe.errors import ArtifactError
from recpipe.features.idmap import N_RESERVED
from recpipe.models.base import ModelConfig, Recommender
from recpipe.models.data import Interactions, Queries
from recpipe.models.sparse import drop_reserved
from recpipe.train.device import resolve_device, seed_everything, to_device
from recpipe.train.distributed import shard_rows
from recpipe.train.loop import (
    EpochCallback,
    GradStepFn,
    RowSparseStepFn,
    TrainConfig,
    Trainer,
    TrainResult,
    ValidateFn,
    save_file,
)

log = logging.getLogger(__name__)

WEIGHTS_FILE = "weights.pt"
VALID_K = 20


class TorchModelConfig(ModelConfig, TrainConfig):
    """Config of a torch model: the loop's options plus the model's own."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_valid_queries: int = Field(
        default=2000, ge=1, description="validation queries sampled for early stopping"
    )
    score_batch_size: int = Field(default=512, ge=1, description="queries scored at a time")


def fingerprint(config: ModelConfig, *arrays: np.ndarray) -> str:
    """A short hash of a config and data arrays (names a checkpoint's run)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(json.dumps(config.model_dump(mode="json"), sort_keys=True).encode())
    for arr in arrays:
        a = np.ascontiguousarray(arr)
        h.update(str((a.dtype.str, a.shape)).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def user_item_csr(data: Interactions, n_users: int, n_items: int) -> sp.csr_matrix:
    """Binary (n_users, n_items) matrix of ``data`` without the reserved slots."""
    return drop_reserved(data.user_item_matrix(n_users, n_items), rows=True, cols=True)


class UserRecallValidator:
    """Recall@K of user queries on the validation part, for early stopping.

    The relevant items of a user are their validation items that are not in their
    training history; training items are excluded from the ranking. At most
    ``max_queries`` users are sampled (seeded), and they are scored in chunks.
    """

    def __init__(
        self,
        score_users: Callable[[torch.nn.Module, torch.Tensor], torch.Tensor],
        train: Interactions,
        valid: Interactions,
        n_users: int,
        n_items: int,
        *,
        k: int = VALID_K,
        max_queries: int = 2000,
        seed: int = 0,
        chunk: int = 256,
    ) -> None:
        seen = user_item_csr(train, n_users, n_items)
        rel = user_item_csr(valid, n_users, n_items)
        rel = (rel - rel.multiply(seen)).tocsr()
        rel.eliminate_zeros()
        users = np.flatnonzero(np.diff(rel.indptr) > 0)
        if users.shape[0] > max_queries:
            rng = np.random.default_rng(seed)
            users = np.sort(rng.choice(users, size=max_queries, replace=False))
        self.users = users
        self.seen = seen[users]
        self.relevant = rel[users]
        self.k = min(k, n_items - N_RESERVED)
        self.chunk = chunk
        self.score_users = score_users
        self.key = f"recall@{k}"

    def __len__(self) -> int:
        return int(self.users.shape[0])

    def __call__(self, module: torch.nn.Module, device: torch.device) -> dict[str, float]:
        if len(self) == 0:
            return {self.key: float("nan")}
        hits = np.zeros(len(self))
        for start in range(0, len(self), self.chunk):
            rows = slice(start, start + self.chunk)
            users = to_device(self.users[rows].astype(np.int64), device)
            scores = self.score_users(module, users).float()
            scores[:, :N_RESERVED] = -torch.inf
            seen = self.seen[rows].tocoo()
            scores[
                to_device(seen.row.astype(np.int64), device),
                to_device(seen.col.astype(np.int64), device),
            ] = -torch.inf
            top = np.array(torch.topk(scores, self.k, dim=1).indices.cpu())
            rel = self.relevant[rows].toarray() > 0
            hits[rows] = np.take_along_axis(rel, top, axis=1).sum(axis=1)
        n_rel = np.diff(self.relevant.indptr)
        return {self.key: float(np.mean(hits / n_rel))}


def next_item_validator(
    model: Any, valid: Interactions
) -> Callable[[torch.nn.Module, torch.device], Mapping[str, float]] | None:
    """Recall@20 and MRR@20 of next-item prediction on sampled validation prefixes, for
    the early stopping of a session model (``model._score_tensor`` scores session
    queries; its config has ``max_len``, ``max_valid_queries``, ``seed`` and
    ``score_batch_size``).

    Every (prefix, next event) pair of the validation sessions whose target is a known
    item is a candidate; at most ``max_valid_queries`` are drawn (seeded by
    ``config.seed``). Ties count against the target. None when no pair qualifies.
    """
    from recpipe.sessions.batching import prefixes

    cfg = model.config
    ends, target_pos = prefixes(valid.offsets)
    targets = valid.item_idx[target_pos].astype(np.int64)
    known = targets >= N_RESERVED
    ends, targets = ends[known], targets[known]
    if ends.shape[0] == 0:
        return None
    if ends.shape[0] > cfg.max_valid_queries:
        rng = np.random.default_rng(cfg.seed)
        pick = np.sort(rng.choice(ends.shape[0], size=cfg.max_valid_queries, replace=False))
        ends, targets = ends[pick], targets[pick]
    queries = Queries.session_prefixes(valid, ends, cfg.max_len)
    k = min(VALID_K, model.meta.n_real_items)
    chunk = cfg.score_batch_size

    def validate(module: torch.nn.Module, device: torch.device) -> Mapping[str, float]:
        hits = rr = 0.0
        for start in range(0, len(queries), chunk):
            part = queries.take(slice(start, start + chunk))
            scores = model._score_tensor(module, part, device).float()
            scores[:, :N_RESERVED] = -torch.inf
            t = to_device(targets[start : start + chunk], device)
            mine = scores.gather(1, t[:, None])
            rank = (scores >= mine).sum(dim=1) - 1  # other items as good or better
            hit = rank < k
            hits += float(hit.sum())
            rr += float(torch.where(hit, 1.0 / (rank + 1).float(), 0.0).sum())
        n = len(queries)
        return {f"recall@{VALID_K}": hits / n, f"mrr@{VALID_K}": rr / n}

    return validate


class TorchRecommender(Recommender):
    """A model trained by :class:`recpipe.train.loop.Trainer` (see the module docstring)."""

    Config: ClassVar[type[ModelConfig]] = TorchModelConfig
    #: The validation metric early stopping follows, and whether higher is better.
    monitor: ClassVar[str] = f"recall@{VALID_K}"
    monitor_mode: ClassVar[Literal["max", "min"]] = "max"
    #: How a DDP rank takes its share of a minibatch: ``"rows"`` (its rows of the
    #: global minibatch, :meth:`_shard_batch`) or ``"batches"`` (whole minibatches in turn).
    ddp_sharding: ClassVar[Literal["rows", "batches"]] = "batches"

    def __init__(self, config: Any, meta: Any) -> None:
        super().__init__(config, meta)
        self.module: torch.nn.Module | None = None
        self.training: TrainResult | None = None
        self._run_options: dict[str, Any] = {}
        self._device: torch.device | None = None

    @classmethod
    def training_options(
        cls, options: Mapping[str, Any], *, device: str, max_epochs: int | None
    ) -> dict[str, Any]:
        """``options`` with ``device`` unless they set one, and ``epochs`` capped at
        ``max_epochs`` (the model's default epochs when the options set none)."""
        out = dict(options)
        out.setdefault("device", device)
        if max_epochs is not None:
            out["epochs"] = min(int(out.get("epochs", cls.Config().epochs)), max_epochs)  # type: ignore[attr-defined]
        return out

    # hooks -------------------------------------------------------------------
    def _build_module(self) -> torch.nn.Module:
        raise NotImplementedError

    def _prepare(self, train: Interactions, valid: Interactions | None) -> None:
        """Precompute what :meth:`_batches` needs (numpy arrays on the instance)."""

    def _batches(self, epoch: int) -> Iterable[Any]:
        raise NotImplementedError

    def _n_batches(self, epoch: int) -> int | None:
        """Number of batches of an epoch, for the progress bar (None: unknown)."""
        return None

    def _step(
        self, module: torch.nn.Module, batch: Any, device: torch.device
    ) -> tuple[torch.Tensor, int]:
        raise NotImplementedError

    def _grad_step(self) -> GradStepFn | None:
        """A step with the signature of :meth:`_step` that also fills every trainable
        parameter's ``.grad`` with its loss's gradient (no backward pass follows), or
        None: autograd over :meth:`_step` (the default). Called once per fit, after
        :meth:`_prepare`; a model returns None wherever its own gradient does not
        cover the config (the loop also ignores it under DDP)."""
        return None

    def _row_sparse_step(self) -> RowSparseStepFn | None:
        """A step that returns its loss's gradient as the distinct rows of each table it
        touched (``(loss, n_examples, [RowGrad, ...])``, see
        :mod:`recpipe.train.sparse`), or None (the default). The loop prefers it to
        :meth:`_grad_step` where the optimiser's update is row-sparse (``adagrad``,
        ``sgd`` with ``momentum: 0``, no weight decay) and one process trains."""
        return None

    def _score_tensor(
        self, module: torch.nn.Module, queries: Queries, device: torch.device
    ) -> torch.Tensor:
        raise NotImplementedError

    def _score_users(self, module: torch.nn.Module, users: torch.Tensor) -> torch.Tensor:
        """(B, n_items) scores of user indices (models that score user queries)."""
        raise NotImplementedError

    def _validator(
        self, train: Interactions, valid: Interactions
    ) -> Callable[[torch.nn.Module, torch.device], Mapping[str, float]] | None:
        """The early-stopping validation; default: Recall@20 of user queries."""
        if "user" not in self.query_kinds:
            return None
        validator = UserRecallValidator(
            self._score_users,
            train,
            valid,
            self.meta.n_users,
            self.meta.n_items,
            max_queries=self.config.max_valid_queries,
            seed=self.config.seed,
        )
        return validator if len(validator) else None

    def _shard_batch(self, batch: Any, rank: int, world_size: int) -> Any:
        """This rank's part of a global minibatch (``ddp_sharding = "rows"``); default:
        its block of rows of every array (:func:`~recpipe.train.distributed.shard_rows`)."""
        return shard_rows(batch, rank, world_size)

    def _save_extra(self, path: Path) -> None:
        """Write state that is not in the module (default: nothing)."""

    def _load_extra(self, path: Path) -> None:
        """Read what :meth:`_save_extra` wrote."""

    # fit ---------------------------------------------------------------------
    def fit(
        self,
        train: Interactions,
        valid: Interactions | None = None,
        *,
        checkpoint_dir: Path | str | None = None,
        progress: bool = False,
        on_epoch: EpochCallback | None = None,
    ) -> Self:
        """Train on ``train``, early-stopping on ``valid`` (see :meth:`Recommender.fit`).

        Parameters
        ----------
        checkpoint_dir : Path, optional
            Checkpoint after every epoch here, and resume from a matching checkpoint.
        progress : bool, default False
            Show a rich progress bar.
        on_epoch : callable, optional
            Receives each epoch's record (loss, examples/s, validation metrics).
        """
        self._run_options = {
            "checkpoint_dir": checkpoint_dir,
            "progress": progress,
            "on_epoch": on_epoch,
        }
        try:
            return super().fit(train, valid)
        finally:
            self._run_options = {}

    def _fit(self, train: Interactions, valid: Interactions | None) -> None:
        cfg = self.config
        seed_everything(cfg.seed)
        module = self._build_module()
        self._prepare(train, valid)
        validate = self._validator(train, valid) if valid is not None and len(valid) else None
        self._train_module(module, train, validate)

    def _train_module(
        self, module: torch.nn.Module, train: Interactions, validate: ValidateFn | None
    ) -> None:
        """Run the shared loop on ``module`` (this model's batches and step, checkpoints
        and progress of :meth:`fit`); keep the result in ``module`` / ``training``."""
        cfg = self.config
        trainer = Trainer(
            cfg.train_options(),
            seed=cfg.seed,
            name=self.name,
            fingerprint=fingerprint(cfg, train.user_idx, train.item_idx, train.value),
            **self._run_options,
        )
        self.training = trainer.fit(
            module,
            batches=self._batches,
            step=self._step,
            validate=validate,
            monitor=self.monitor if validate is not None else None,
            mode=self.monitor_mode,
            n_batches=self._n_batches,
            shard=self._shard_batch if self.ddp_sharding == "rows" else None,
            grad_step=self._grad_step(),
            sparse_step=self._row_sparse_step(),
        )
        trainer.clear_checkpoint()
        self.module = module
        self._device = trainer.device

    # score -------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        """Where the module runs (set by fit / load)."""
        if self._device is None:
            self._device = resolve_device(self.config.device)
        return self._device

    def _score(self, queries: Queries) -> np.ndarray:
        assert self.module is not None
        self.module.eval()
        out = np.empty((len(queries), self.meta.n_items), dtype=np.float32)
        step = self.config.score_batch_size
        with torch.no_grad():
            for start in range(0, len(queries), step):
                part = queries.take(slice(start, start + step))
                scores = self._score_tensor(self.module, part, self.device)
                out[start : start + len(part)] = scores.float().cpu().numpy()
        return out

    # persistence ---------------------------------------------------------------
    def _save_state(self, path: Path) -> None:
        assert self.module is not None
        state = {k: v.detach().cpu() for k, v in self.module.state_dict().items()}
        save_file(state, path / WEIGHTS_FILE)
        self._save_extra(path)

    def _load_state(self, path: Path) -> None:
        file = path / WEIGHTS_FILE
        if not file.is_file():
            raise ArtifactError(f"model artifact {str(path)!r} lacks {WEIGHTS_FILE}")
        self._load_extra(path)
        try:
            state = torch.load(file, map_location="cpu", weights_only=True)
        except Exception as exc:  # the unpickler raises many kinds on a damaged file
            raise ArtifactError(f"{str(file)!r} is not a readable torch state dict: {exc}") from exc
        if not isinstance(state, dict):
            raise ArtifactError(f"{str(file)!r} does not hold a state dict")
        module = self._build_module()
        module.load_state_dict(state)  # RuntimeError on missing keys / wrong shapes
        self.module = module.to(self.device).eval()
