"""DistributedDataParallel training: 2 gloo processes on CPU against 1 process.

One ``torchrun --standalone --nproc_per_node 2`` job (tests/unit/ddp_worker.py) trains
every torch model family (mf_bpr, mf_wals, GRU4Rec with cross-entropy and BPR-max, the
contextual GRU4Rec, Wide & Deep, DeepFM, Content2CF, Content2Vec) and an mf_bpr run that
resumes from a checkpoint written by a killed 1-process run; the same cases run here in
one process.

Tolerance: every rank builds the same global minibatch (same negatives) and keeps its
rows, and each rank's loss is weighted by its share of the examples, so the averaged
gradient is the 1-process gradient up to float32 summation order (the two halves are
reduced separately, then added). Those ~1e-7 relative differences pass through a few
epochs of Adam / Adagrad; we allow 1e-4 relative (plus 1e-5 absolute) on the per-epoch
losses, and 1e-5 absolute on the final scores less each query's mean, far below what
a different batch or sample would give (that moves the losses at the 1e-2 level).
Scores are compared up to a per-query constant because parameters whose exact gradient
is zero (BPR's user and global biases cancel in ``pos - neg``) get float-noise
gradients of either sign, which Adam normalises into learning-rate-sized steps: they
shift every score of a user by the same amount and change no ranking.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from recpipe.train import distributed as ddp
from tests.conftest import REPO_ROOT
from tests.unit import ddp_worker

RTOL, ATOL = 1e-4, 1e-5


class _Killed(Exception):
    pass


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """{case: {"one": 1-process record, "ranks": [rank 0, rank 1 records]}}."""
    tmp = tmp_path_factory.mktemp("ddp")
    out, checkpoints = tmp / "out", tmp / "checkpoints"
    out.mkdir()

    # A 1-process run of the resume case killed after its second epoch leaves a checkpoint.
    def die(record: dict) -> None:
        if record["epoch"] == 1:
            raise _Killed

    with pytest.raises(_Killed):
        ddp_worker.fit("mf_bpr_resume", checkpoint_dir=checkpoints / "mf_bpr_resume", on_epoch=die)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}
    job = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "tests.unit.ddp_worker",
            str(out),
            str(checkpoints),
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert job.returncode == 0, job.stderr[-4000:]
    result: dict[str, dict] = {}
    for name, (model_name, _) in ddp_worker.CASES.items():
        one = ddp_worker.fit(name if name != "mf_bpr_resume" else "mf_bpr")
        result[name] = {
            "one": {
                "history": [r["loss"] for r in one.training.history],
                "examples": [r["examples"] for r in one.training.history],
                "scores": one.score(ddp_worker.queries(model_name)).tolist(),
            },
            "ranks": [json.loads((out / f"{name}.rank{r}.json").read_text()) for r in (0, 1)],
        }
    result["_checkpoints"] = {"left": sorted(str(p) for p in checkpoints.rglob("*.pt"))}
    return result


@pytest.mark.parametrize("name", list(ddp_worker.CASES))
def test_two_processes_match_one(runs, name):
    run = runs[name]
    zero, one_rank = run["ranks"]
    assert zero["world_size"] == 2
    # the ranks end with bit-identical weights
    assert zero["digest"] == one_rank["digest"]
    # losses per epoch and final scores equal those of one process
    np.testing.assert_allclose(zero["history"], run["one"]["history"], rtol=RTOL, atol=ATOL)
    assert zero["examples"] == run["one"]["examples"]  # every example once per epoch
    np.testing.assert_allclose(_centred(zero["scores"]), _centred(run["one"]["scores"]), atol=ATOL)


def _centred(scores: list) -> np.ndarray:
    """Scores less each query's mean over the finite ones (see the module docstring)."""
    s = np.asarray(scores, dtype=np.float64)
    finite = np.isfinite(s)
    mean = np.where(finite, s, 0).sum(1, keepdims=True) / finite.sum(1, keepdims=True)
    return np.where(finite, s - mean, 0.0)


def test_only_rank_zero_reports_epochs(runs):
    zero, one_rank = runs["mf_bpr"]["ranks"]
    assert zero["on_epoch"] == list(range(ddp_worker.EPOCHS))
    assert one_rank["on_epoch"] == []


def test_every_rank_resumes_from_the_checkpoint(runs):
    zero, one_rank = runs["mf_bpr_resume"]["ranks"]
    # killed in epoch 2's callback, before its checkpoint: epoch 1's is the last
    assert zero["resumed_from"] == one_rank["resumed_from"] == 1
    assert zero["on_epoch"] == [1, 2]  # only the epochs after the checkpoint
    assert runs["_checkpoints"]["left"] == []  # rank 0 removed it after the run


def test_shard_rows_splits_every_array_into_contiguous_blocks():
    from recpipe.features.inputs import TripletBatch

    batch = TripletBatch(np.arange(5), np.arange(5) + 10, np.arange(10).reshape(5, 2))
    parts = [ddp.shard_rows(batch, r, 2) for r in (0, 1)]
    assert [p.users.tolist() for p in parts] == [[0, 1], [2, 3, 4]]
    assert parts[1].negatives.tolist() == [[4, 5], [6, 7], [8, 9]]
    with pytest.raises(TypeError, match="5 rows"):
        ddp.shard_rows((np.arange(5), np.arange(3)), 0, 2)


def test_round_robin_gives_equal_counts_and_drops_the_tail():
    assert list(ddp.round_robin(range(7), 0, 3)) == [0, 3]
    assert list(ddp.round_robin(range(7), 2, 3)) == [2, 5]


def test_gru_batch_shard_keeps_the_other_lanes_as_columns():
    from recpipe.models.gru4rec import GRUBatch

    batch = GRUBatch(
        inputs=np.array([3, 4, 5, 6]),
        targets=np.array([7, 8, 7, 0]),
        reset=np.zeros(4, bool),
        active=np.array([1, 1, 1, 0], bool),
        negatives=np.array([7, 9]),
        context=None,
        session=np.array([0, 1, 2, -1]),
        hits=(np.empty(0, np.int64), np.empty(0, np.int64)),
    )
    part = batch.shard(1, 2)
    assert part.targets.tolist() == [7, 0] and part.others.tolist() == [7, 8]
    # row 0's target 7 is also column 2 (another lane's) and column 4 (a sample)
    assert list(zip(*(h.tolist() for h in part.hits), strict=True)) == [(0, 2), (0, 4)]


def test_torchrun_environment_is_read_and_checked():
    assert ddp.torchrun_env({}) is None
    env = ddp.torchrun_env({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"})
    assert (env.rank, env.world_size, env.local_rank) == (1, 2, 1)
    from recpipe.errors import ConfigError

    with pytest.raises(ConfigError, match="RANK=2 WORLD_SIZE=2"):
        ddp.torchrun_env({"RANK": "2", "WORLD_SIZE": "2", "LOCAL_RANK": "0"})
    assert ddp.world_size() == 1 and ddp.is_main() and ddp.backend_for("cpu") == "gloo"
