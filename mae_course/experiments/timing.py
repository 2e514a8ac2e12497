"""Lessons 03 and 08: timing two ways of doing the same work, fairly, on a machine that is not quiet.

Timing A for a while and then B for a while compares A's moment of the machine with B's: a
background job that starts in between makes any ratio. So the contenders take turns, round after
round, each round yields one ratio, and the result is the median of the ratios with their spread
(the lowest and the highest). A wide spread says the machine was busy: time again when it is idle.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import NamedTuple

import torch


class Ratio(NamedTuple):
    median: float
    low: float
    high: float
    rounds: int

    def __str__(self) -> str:
        return f"{self.median:.2f}x (from {self.low:.2f}x to {self.high:.2f}x over {self.rounds} rounds)"


def alternating_seconds(
    contenders: dict[str, Callable[[], object]], rounds: int = 5, warmup: int = 1, repeats: int = 1
) -> dict[str, list[float]]:
    """Each contender's seconds per call, one measurement per round, the contenders taking turns.

    ``warmup`` untimed rounds come first (first calls allocate and tune); each measurement is the
    mean of ``repeats`` calls. A GPU is synchronised around each measurement.
    """
    seconds: dict[str, list[float]] = {name: [] for name in contenders}
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    for round_ in range(warmup + rounds):
        for name, work in contenders.items():
            sync()
            start = time.perf_counter()
            for _ in range(repeats):
                work()
            sync()
            if round_ >= warmup:
                seconds[name].append((time.perf_counter() - start) / repeats)
    return seconds


def ratio(slow: list[float], fast: list[float]) -> Ratio:
    """How many times longer ``slow`` took than ``fast``, round by round: median and spread."""
    ratios = [s / f for s, f in zip(slow, fast, strict=True)]
    return Ratio(statistics.median(ratios), min(ratios), max(ratios), len(ratios))
