"""Search spaces for tuning, declared next to each model's config.

A model class lists the options worth tuning in its ``search_space`` class attribute,
``{option: dimension}``, with the dimensions below; :mod:`recpipe.tuning` turns them into
Optuna suggestions. Nothing here imports Optuna: a space is plain data, checked against
the model's config by the contract tests.

>>> space = {"factors": Int(16, 256, log=True), "loss": Choice(("bpr", "top1"))}
>>> sorted(space)
['factors', 'loss']
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Int:
    """An integer in ``[low, high]`` (log-uniform with ``log``); ``as_tuple`` gives the
    option as a one-element tuple (e.g. one hidden layer's width)."""

    low: int
    high: int
    log: bool = False
    as_tuple: bool = False

    def __post_init__(self) -> None:
        if not self.low <= self.high or (self.log and self.low < 1):
            raise ValueError(f"bad integer range [{self.low}, {self.high}] (log={self.log})")


@dataclass(frozen=True)
class Float:
    """A float in ``[low, high]`` (log-uniform with ``log``)."""

    low: float
    high: float
    log: bool = False

    def __post_init__(self) -> None:
        if not self.low <= self.high or (self.log and self.low <= 0):
            raise ValueError(f"bad float range [{self.low}, {self.high}] (log={self.log})")


@dataclass(frozen=True)
class Choice:
    """One of ``options`` (None, bool, int, float or str values)."""

    options: tuple[Any, ...]

    def __post_init__(self) -> None:
        if not self.options:
            raise ValueError("a Choice needs at least one option")


Dimension = Int | Float | Choice
SearchSpace = Mapping[str, Dimension]


def to_option(dimension: Dimension, value: Any) -> Any:
    """The config value of a sampled ``value`` (a tuple for ``Int(as_tuple=True)``)."""
    if isinstance(dimension, Int) and dimension.as_tuple:
        return (int(value),)
    return value
