"""A torchrun worker for tests/unit/test_distributed.py (not a test module).

``torchrun --standalone --nproc_per_node N -m tests.unit.ddp_worker OUT CHECKPOINTS``
trains the cases of :data:`CASES` on the planted data under DDP. Every rank writes
``OUT/<case>.rank<r>.json``: the loss history, how often ``on_epoch`` ran on it, a
digest of its final weights (equal on every rank) and, from rank 0, the scores of a
few queries. ``CHECKPOINTS/<case>`` holds a checkpoint to resume from, when present.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from recpipe.models.data import Queries
from recpipe.models.registry import build_model
from recpipe.train import distributed as ddp
from tests.contract.planted import planted

EPOCHS = 3
GRU: dict[str, Any] = {
    "batch_size": 32,
    "layers": [16],
    "n_sample": 16,
    "dropout_input": 0.0,
    "dropout_hidden": 0.0,
}
#: name -> (model, config); dropout off so that 1 and 2 processes compute the same.
SAS: dict[str, Any] = {"batch_size": 8, "hidden": 16, "blocks": 1, "max_len": 8, "dropout": 0.0}
CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "mf_bpr": ("mf_bpr", {"batch_size": 16, "factors": 16, "negatives": 4}),
    "gru4rec": ("gru4rec", GRU),
    "gru4rec_bpr": ("gru4rec", {**GRU, "loss": "bpr_max"}),
    "gru4rec_ctx": ("gru4rec_ctx", GRU),
    "mf_bpr_resume": ("mf_bpr", {"batch_size": 16, "factors": 16, "negatives": 4}),
    "mf_wals": ("mf_wals", {"batch_size": 7, "factors": 8, "l2": 0.01}),
    "wide_deep": (
        "wide_deep",
        {"batch_size": 64, "embedding_dim": 8, "hidden": [16], "dropout": 0.0},
    ),
    "deepfm": ("deepfm", {"batch_size": 64, "embedding_dim": 8, "hidden": [16], "dropout": 0.0}),
    "content2cf": ("content2cf", {"batch_size": 5, "hidden": [16], "dropout": 0.0}),
    "content2vec": (
        "content2vec",
        {"batch_size": 16, "dim": 8, "negatives": 2, "dropout": 0.0},
    ),
    "sasrec": ("sasrec", SAS),
    "sasrec_sampled": (
        "sasrec",
        {**SAS, "loss": "sampled_softmax", "n_negatives": 8, "in_batch": True},
    ),
}


def config(name: str) -> dict[str, Any]:
    """The full config of a case."""
    _, cfg = CASES[name]
    return {**cfg, "epochs": EPOCHS, "patience": None, "device": "cpu", "seed": 3}


def queries(model_name: str) -> Queries:
    """The queries whose scores are compared."""
    if model_name in ("mf_bpr", "mf_wals", "wide_deep", "deepfm", "content2cf"):
        return Queries.for_users([2, 5, 9, 11])
    return Queries.for_items([3, 4, 7, 12])


def fit(name: str, checkpoint_dir: Path | None = None, on_epoch: Any = None) -> Any:
    """Train one case (in this process, or as this rank of a DDP job)."""
    train, valid, meta = planted()
    model = build_model(CASES[name][0], config(name), meta)
    return model.fit(train, valid, checkpoint_dir=checkpoint_dir, on_epoch=on_epoch)


def digest(model: Any) -> str:
    """A hash of the module's weights."""
    h = hashlib.sha256()
    for key, value in sorted(model.module.state_dict().items()):
        h.update(key.encode())
        h.update(value.detach().cpu().numpy().tobytes())
    return h.hexdigest()


def main(out: Path, checkpoints: Path) -> None:
    """Train every case as this rank and write its record."""
    with ddp.session("cpu"):
        rank = ddp.rank()
        for name in CASES:
            calls: list[int] = []
            folder = checkpoints / name
            model = fit(
                name,
                checkpoint_dir=folder if folder.is_dir() else None,
                on_epoch=lambda record, calls=calls: calls.append(record["epoch"]),
            )
            record = {
                "world_size": ddp.world_size(),
                "history": [r["loss"] for r in model.training.history],
                "examples": [r["examples"] for r in model.training.history],
                "resumed_from": model.training.resumed_from,
                "on_epoch": calls,
                "digest": digest(model),
                "scores": model.score(queries(CASES[name][0])).tolist() if rank == 0 else None,
            }
            (out / f"{name}.rank{rank}.json").write_text(json.dumps(record))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
