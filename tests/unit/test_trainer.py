"""The shared training loop: determinism, checkpoint-resume, NaN, early stopping, device."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recpipe.errors import TrainingError
from recpipe.train.device import resolve_device
from recpipe.train.loop import CHECKPOINT_FILE, TrainConfig, Trainer

N = 64


def _data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(N, 5)).astype(np.float32)
    y = (x @ np.arange(1, 6, dtype=np.float32) + 0.5).astype(np.float32)
    return x, y


def _module() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Dropout(0.2), torch.nn.Linear(8, 1))


def _batches(epoch: int):
    x, y = _data()
    order = np.random.default_rng(100 + epoch).permutation(N)
    for start in range(0, N, 16):
        idx = order[start : start + 16]
        yield x[idx], y[idx]


def _step(module, batch, device):
    x, y = (torch.from_numpy(a).to(device) for a in batch)
    return torch.mean((module(x).squeeze(-1) - y) ** 2), int(x.shape[0])


def _weights(module: torch.nn.Module) -> list[np.ndarray]:
    return [p.detach().cpu().numpy().copy() for p in module.parameters()]


CFG = TrainConfig(epochs=5, learning_rate=0.05, patience=None, device="cpu")


def test_loss_falls_and_history_is_recorded():
    module = _module()
    result = Trainer(CFG, seed=1).fit(module, batches=_batches, step=_step)
    losses = [r["loss"] for r in result.history]
    assert len(losses) == 5 and losses[-1] < losses[0] / 2
    assert all(r["examples"] == N for r in result.history)
    assert result.device == "cpu" and result.resumed_from is None


def test_same_seed_same_weights_on_cpu():
    a, b = _module(), _module()
    Trainer(CFG, seed=3).fit(a, batches=_batches, step=_step)
    Trainer(CFG, seed=3).fit(b, batches=_batches, step=_step)
    for wa, wb in zip(_weights(a), _weights(b), strict=True):
        np.testing.assert_array_equal(wa, wb)


class _Killed(Exception):
    pass


def test_resume_after_a_kill_gives_the_uninterrupted_weights(tmp_path):
    whole = _module()
    Trainer(CFG, seed=7).fit(whole, batches=_batches, step=_step)

    calls = {"n": 0}

    def dying_step(module, batch, device):
        calls["n"] += 1
        if calls["n"] == 3 * 4 + 2:  # the second step of the fourth epoch
            raise _Killed
        return _step(module, batch, device)

    first = _module()
    with pytest.raises(_Killed):
        Trainer(CFG, seed=7, checkpoint_dir=tmp_path, fingerprint="f").fit(
            first, batches=_batches, step=dying_step
        )
    assert (tmp_path / CHECKPOINT_FILE).is_file()
    resumed = _module()  # a fresh process: new module, new optimiser, same seed
    trainer = Trainer(CFG, seed=7, checkpoint_dir=tmp_path, fingerprint="f")
    result = trainer.fit(resumed, batches=_batches, step=_step)
    assert result.resumed_from == 3
    assert [r["epoch"] for r in result.history] == [0, 1, 2, 3, 4]
    for wa, wb in zip(_weights(whole), _weights(resumed), strict=True):
        np.testing.assert_array_equal(wa, wb)
    trainer.clear_checkpoint()
    assert not (tmp_path / CHECKPOINT_FILE).exists()


def test_a_checkpoint_of_another_run_is_ignored(tmp_path):
    Trainer(CFG, seed=7, checkpoint_dir=tmp_path, fingerprint="old").fit(
        _module(), batches=_batches, step=_step
    )
    result = Trainer(CFG, seed=7, checkpoint_dir=tmp_path, fingerprint="new").fit(
        _module(), batches=_batches, step=_step
    )
    assert result.resumed_from is None and len(result.history) == 5
    (tmp_path / CHECKPOINT_FILE).write_bytes(b"torn")
    result = Trainer(CFG, seed=7, checkpoint_dir=tmp_path, fingerprint="new").fit(
        _module(), batches=_batches, step=_step
    )
    assert result.resumed_from is None


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_loss_names_epoch_and_step(bad):
    calls = {"n": 0}

    def step(module, batch, device):
        calls["n"] += 1
        loss, n = _step(module, batch, device)
        return (loss * bad if calls["n"] == 4 + 3 else loss), n

    with pytest.raises(TrainingError, match=r"at epoch 2, step 3") as info:
        Trainer(CFG, seed=0, name="tiny").fit(_module(), batches=_batches, step=step)
    assert "tiny" in str(info.value) and "learning_rate" in str(info.value)


def test_early_stopping_restores_the_best_epoch():
    scores = iter([0.1, 0.5, 0.4, 0.3, 0.2])
    snapshots = []

    def validate(module, device):
        snapshots.append(_weights(module))
        return {"recall@20": next(scores)}

    cfg = TrainConfig(epochs=5, learning_rate=0.01, patience=2, device="cpu")
    module = _module()
    result = Trainer(cfg, seed=0).fit(
        module, batches=_batches, step=_step, validate=validate, monitor="recall@20"
    )
    assert result.stopped_early and result.best_epoch == 1 and result.best_metric == 0.5
    assert len(result.history) == 4  # epochs 0..3: two epochs without improvement
    for got, best in zip(_weights(module), snapshots[1], strict=True):
        np.testing.assert_array_equal(got, best)


def test_min_mode_and_a_missing_monitored_metric():
    cfg = TrainConfig(epochs=3, learning_rate=0.01, patience=1, device="cpu")
    values = iter([3.0, 2.0, 2.5])
    result = Trainer(cfg).fit(
        _module(),
        batches=_batches,
        step=_step,
        validate=lambda m, d: {"rmse": next(values)},
        monitor="rmse",
        mode="min",
    )
    assert result.best_epoch == 1 and result.stopped_early
    with pytest.raises(TrainingError, match="monitored metric 'ndcg@20'"):
        Trainer(cfg).fit(
            _module(),
            batches=_batches,
            step=_step,
            validate=lambda m, d: {"rmse": 1.0},
            monitor="ndcg@20",
        )


def test_on_epoch_receives_each_record_and_progress_runs():
    seen = []
    Trainer(CFG, seed=0, progress=True, on_epoch=seen.append).fit(
        _module(), batches=_batches, step=_step
    )
    assert [r["epoch"] for r in seen] == list(range(5))
    assert all(r["examples_per_s"] > 0 for r in seen)


def test_devices():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(TrainingError, match="not a device"):
        resolve_device("gpu please")
    if not torch.cuda.is_available():
        with pytest.raises(TrainingError, match="no CUDA GPU"):
            resolve_device("cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_training_with_bf16_autocast():
    cfg = TrainConfig(epochs=3, learning_rate=0.01, patience=None, device="cuda", amp=True)
    module = _module()
    result = Trainer(cfg, seed=0).fit(module, batches=_batches, step=_step)
    assert result.device.startswith("cuda")
    assert next(module.parameters()).device.type == "cuda"
    assert result.history[-1]["loss"] < result.history[0]["loss"]


def _linear() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Linear(5, 1)


def _linear_step(module, batch, device):
    x, y = (torch.from_numpy(a).to(device) for a in batch)
    return torch.mean((module(x).squeeze(-1) - y) ** 2), int(x.shape[0])


def _linear_grad_step(module, batch, device):
    """The MSE of a linear model and its gradient by hand, written into .grad."""
    x, y = (torch.from_numpy(a).to(device) for a in batch)
    with torch.no_grad():
        residual = module(x).squeeze(-1) - y  # (B,)
        d = 2.0 * residual / x.shape[0]
        for param, grad in ((module.weight, d[None, :] @ x), (module.bias, d.sum().reshape(1))):
            assert param.grad is None  # the loop clears the gradients before each step
            param.grad = grad
        return torch.mean(residual**2), int(x.shape[0])


def test_a_grad_step_replaces_backward_and_gives_autograds_weights():
    auto, manual = _linear(), _linear()
    ran = Trainer(CFG, seed=1).fit(auto, batches=_batches, step=_linear_step)
    by_hand = Trainer(CFG, seed=1).fit(
        manual, batches=_batches, step=_linear_step, grad_step=_linear_grad_step
    )
    assert ran.extra["gradient"] == "autograd" and by_hand.extra["gradient"] == "grad_step"
    for a, b in zip(_weights(auto), _weights(manual), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        [r["loss"] for r in by_hand.history], [r["loss"] for r in ran.history], rtol=1e-5
    )


@pytest.mark.parametrize("max_norm", [0.5, 1e6])  # clipped, and left alone
def test_clip_grad_norm_gives_torchs_numbers(max_norm):
    from recpipe.train.loop import clip_grad_norm

    module = _module()
    gen = torch.Generator().manual_seed(1)
    raw = [torch.randn(p.shape, generator=gen) for p in module.parameters()]
    clipped = []
    for clip in (clip_grad_norm, torch.nn.utils.clip_grad_norm_):
        for p, g in zip(module.parameters(), raw, strict=True):
            p.grad = g.clone()
        clip(module if clip is clip_grad_norm else module.parameters(), max_norm)
        clipped.append([p.grad.clone() for p in module.parameters()])
    for ours, torchs, before in zip(*clipped, raw, strict=True):
        assert torch.equal(ours, torchs)  # bit for bit
        assert torch.equal(ours, before) == (max_norm > 1)
    norm = torch.linalg.vector_norm(torch.cat([g.reshape(-1) for g in clipped[0]]))
    assert float(norm) == pytest.approx(min(max_norm, float(norm)), rel=1e-4)
