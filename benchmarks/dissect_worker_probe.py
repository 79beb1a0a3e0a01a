"""Probe: is a dissection shard slower in a Ray worker than in this process, and does
glibc's allocator setting (``core.device.keep_freed_memory``) explain it? fashion-cnn's
``features`` over the 10,000 test images in 8 shards, one thread, a local Ray cluster of 1
worker; 3 rounds of: here, on Ray, on Ray with the setting, here with the setting (the
setting lasts for the process, so "here" is only unset in rounds before it). Prints the
time inside the shards.

Run in session 10 before ``core/shards.py`` made the call in every Ray task (so "ray" was
then without it): here 9.05/6.72/6.68 s, ray 9.32/6.71/6.84, ray+mallopt 6.61/6.63/6.68,
here+mallopt 6.75/6.64/6.64 (AMD EPYC, 2 cores). Now "ray" has the setting too.

    uv run python benchmarks/dissect_worker_probe.py
"""

from __future__ import annotations

import statistics
import time
import warnings
from typing import Any

import torch

from convlens import models
from convlens.core.device import keep_freed_memory
from convlens.core.shards import Shard, connect, plan, run_shards
from convlens.data.sources import FashionSplit
from convlens.interpret.dissect import DissectSettings, _Pass

warnings.filterwarnings("ignore")


class Timed:
    """A shard that times its own work, after the allocator setting when asked."""

    def __init__(self, task: _Pass, mallopt: bool) -> None:
        self.task, self.mallopt = task, mallopt

    def __call__(self, shard: Shard) -> dict[str, Any]:
        if self.mallopt:
            keep_freed_memory()
        t = time.perf_counter()
        self.task(shard)
        return {"inside_s": time.perf_counter() - t}


def main() -> None:
    model, data = models.load("fashion-cnn").model.eval(), FashionSplit("test")
    parts = plan(len(data), 8, 128)
    torch.set_num_threads(1)
    task = _Pass(model, data, "features", DissectSettings(workers=0))
    connect("local:1")
    times: dict[str, list[float]] = {}
    for _ in range(3):
        for name in ("here", "ray", "ray+mallopt", "here+mallopt"):
            if name.startswith("here"):
                if name == "here+mallopt":
                    keep_freed_memory()
                t = time.perf_counter()
                for shard in parts:
                    task(shard)
                times.setdefault(name, []).append(time.perf_counter() - t)
            else:
                states = run_shards(Timed(task, name.endswith("mallopt")), parts, ray="local")
                times.setdefault(name, []).append(sum(s["inside_s"] for s in states))
    for name, v in times.items():
        print(name, [round(x, 2) for x in v], "median", round(statistics.median(v), 2))


if __name__ == "__main__":
    main()
