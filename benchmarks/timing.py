"""Timing shared by the benchmark scripts."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TypeVar

import torch

T = TypeVar("T")


def synced(fn: Callable[[], T]) -> tuple[T, float]:
    """``fn()`` and its seconds, the clock read after CUDA has finished the work it was
    given (its kernels run behind the Python that launches them)."""
    start = time.perf_counter()
    out = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return out, time.perf_counter() - start


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


def add_device_args(p: argparse.ArgumentParser) -> None:
    """``--device`` and ``--precision``, as the commands take them."""
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N, mps or auto [cpu]")
    p.add_argument("--precision", choices=("fp32", "bf16", "fp16", "auto"), default="fp32")


def placed(args: argparse.Namespace) -> tuple[torch.device, AbstractContextManager[None]]:
    """The device the benchmark runs on, and its precision as a context (checked first:
    bf16 on a CPU without bf16 units is refused, as the commands refuse it)."""
    from convlens.core.device import resolve_device
    from convlens.core.precision import precision

    device = resolve_device(args.device)
    return device, precision(args.precision, device)


def run_record(args: argparse.Namespace, device: torch.device) -> dict[str, object]:
    """What a result file records of the run: the machine, device and precision."""
    from convlens.core.device import machine_info
    from convlens.core.precision import native

    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    return {
        **machine_info(),
        "device": str(device),
        "gpu": gpu,
        "precision": args.precision,
        "bf16_hardware": native("bf16", device),
    }
