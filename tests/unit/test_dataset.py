"""A split's data is read once per process however many stages and candidates use it,
and read again when the features stage rewrites it."""

from __future__ import annotations

import json
import os

import pytest

from recpipe.models import dataset
from recpipe.models.dataset import clear_cache, load_split
from recpipe.paths import Paths
from tests.unit.gate_workspace import build_workspace

#: Every part of the session split, in the order they are read.
WHOLE = ["session/train", "session/valid", "session/test"]


@pytest.fixture
def reads(monkeypatch):
    """The parts (``<split>/<part>``) :func:`recpipe.models.dataset.load_split` actually
    read from disk."""
    clear_cache()
    seen: list[str] = []
    real = dataset._read

    def counting(folder, parts, known):
        have = {} if known is None else known.parts
        seen.extend(f"{folder.name}/{p}" for p in parts if p not in have)
        return real(folder, parts, known)

    monkeypatch.setattr(dataset, "_read", counting)
    yield seen
    clear_cache()


def test_a_split_is_read_once_and_again_after_a_rewrite(tmp_path, reads) -> None:
    paths = build_workspace(tmp_path)
    folder = paths.features_dir / "session"
    first = load_split(folder)
    assert load_split(folder) is first
    assert set(first.parts) == {"train", "valid", "test"} and first.test_user_keys is None
    assert reads == WHOLE
    meta = folder / "meta.json"
    stat = meta.stat()
    meta.write_text(json.dumps(json.loads(meta.read_text())) + " ")  # rewritten by a rerun
    os.utime(meta, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert load_split(folder) is not first
    assert reads == WHOLE * 2


def test_a_split_read_without_its_test_part_keeps_its_parts_when_completed(tmp_path, reads) -> None:
    folder = build_workspace(tmp_path).features_dir / "session"
    partial = load_split(folder, ("train", "valid"))
    assert set(partial.parts) == {"train", "valid"}
    assert load_split(folder, ("train",)) is partial
    full = load_split(folder)
    assert set(full.parts) == {"train", "valid", "test"}
    assert full.parts["train"] is partial.parts["train"]  # only the test part was read
    assert load_split(folder, ("train", "valid")) is full
    assert reads == WHOLE  # each part once
    with pytest.raises(ValueError, match="unknown part"):
        load_split(folder, ("tset",))


def test_the_train_evaluate_and_gate_stages_share_one_read(tmp_path, reads) -> None:
    import mlflow

    from recpipe import stages
    from tests.unit.gate_workspace import small_params

    paths: Paths = build_workspace(tmp_path)
    params = small_params(
        tmp_path,
        "train.candidates=[markov, sr]",
        "train.splits=[session]",
        "train.model_splits={}",
        "evaluate.splits=[session]",
        "evaluate.models=[pop]",
        "gate.split=session",
    )
    before = mlflow.get_tracking_uri()
    try:
        stages.train(params, paths)
        stages.evaluate(params, paths)
        assert stages.gate(params, paths)["candidate"]["model"] in {"markov", "sr"}
    finally:
        mlflow.set_tracking_uri(before)
    assert reads == WHOLE  # train and valid for training, the test part for evaluation
