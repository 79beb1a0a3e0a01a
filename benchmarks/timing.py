"""Timing shared by the benchmark scripts."""

from __future__ import annotations

import time
from collections.abc import Callable


def best_time(fn: Callable[[], object], repeats: int) -> float:
    """Fastest of ``repeats`` runs after one warm-up, seconds."""
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def best_times(fns: list[Callable[[], object]], repeats: int, least: float = 0.2) -> list[float]:
    """Fastest of ``repeats`` runs of each function, the functions taking turns (so a
    slow spell of the machine falls on all of them); a function faster than ``least``
    seconds is run as many times in a row as make up ``least``, and timed per run."""
    counts = []
    for fn in fns:
        t = time.perf_counter()
        fn()  # warm-up, and the count of calls per timing
        counts.append(max(1, int(least / max(time.perf_counter() - t, 1e-6))))
    best = [float("inf")] * len(fns)
    for _ in range(repeats):
        for i, (fn, n) in enumerate(zip(fns, counts, strict=True)):
            t = time.perf_counter()
            for _ in range(n):
                fn()
            best[i] = min(best[i], (time.perf_counter() - t) / n)
    return best
