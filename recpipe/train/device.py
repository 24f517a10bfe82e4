"""Device choice, mixed precision and seeding for torch training.

``device: auto`` picks CUDA when a GPU is present, else the CPU. On CUDA the loop
runs the forward pass under bf16 autocast (when ``amp`` is on) and copies batches
from pinned host memory; on the CPU it runs in float32 and is deterministic for a
given seed (same thread count, same weights).
"""

from __future__ import annotations

import contextlib
import logging
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from recpipe.errors import TrainingError

log = logging.getLogger(__name__)


def resolve_device(spec: str) -> torch.device:
    """The torch device that ``spec`` names.

    Parameters
    ----------
    spec : str
        ``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` or ``cuda:N``.

    Raises
    ------
    TrainingError
        CUDA was asked for on a machine without it, or ``spec`` is not a device.
    """
    spec = str(spec).strip().lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise TrainingError(
            f"device {spec!r} is not a device; expected auto, cpu, cuda or cuda:N"
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TrainingError(
            f"device {spec!r} asked for, but this machine has no CUDA GPU; use device=auto or cpu"
        )
    if device.type not in {"cpu", "cuda"}:
        raise TrainingError(f"device {spec!r} is not supported; expected auto, cpu, cuda or cuda:N")
    return device


@contextlib.contextmanager
def autocast(device: torch.device, enabled: bool) -> Iterator[None]:
    """bf16 autocast on CUDA when ``enabled``; a no-op on the CPU."""
    if enabled and device.type == "cuda":
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16):
            yield
    else:
        yield


def seed_everything(seed: int) -> None:
    """Seed Python, numpy's legacy global RNG and torch (CPU and every GPU)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """The torch RNG states (CPU and CUDA) for a checkpoint."""
    state: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def to_device(array: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    """A numpy array (or tensor) on ``device``; pinned and non-blocking on CUDA."""
    tensor = (
        torch.from_numpy(np.ascontiguousarray(array)) if isinstance(array, np.ndarray) else array
    )
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)
