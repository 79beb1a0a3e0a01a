"""The cost of running a dissection as shards on Ray, against one process, in one run:
fashion-cnn's ``features`` over the 10,000 FashionMNIST test images.

- in this process with 1 thread, then with 2 threads;
- a local Ray cluster of 1 worker CPU, then one of 2 (each task has 1 thread): the
  cluster's start (``ray.init``) and the first job (its workers start and import torch)
  are reported apart from a second, warm job, whose time is the figure;
- the same in this process with 1 thread in shards, to price a shard.

Every sharded answer is checked equal to the one-process answer. The model of time
against workers is ``t(W) = t_1 / W + o * shards / W``, with ``o`` a shard's overhead
measured here.

    uv run python benchmarks/dissect_scale.py --json benchmarks/results/dissect_scale.json
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path
from typing import Any

import ray
import torch

from convlens import models
from convlens.core.device import machine_info
from convlens.core.fileio import atomic_write_json
from convlens.core.shards import Sharding, connect
from convlens.data.sources import FashionSplit
from convlens.interpret.dissect import Dissection, dissect

warnings.filterwarnings("ignore")
FIELDS = ("thresholds", "top_index", "top_maps", "class_means", "rectified_means")


def same(a: Dissection, b: Dissection) -> bool:
    return all(torch.equal(getattr(a, f), getattr(b, f)) for f in FIELDS)


def timed(fn: Any) -> tuple[Any, float]:
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shards", type=int, default=8)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    model, data = models.load("fashion-cnn").model, FashionSplit("test")

    def run(**kw: Any) -> Dissection:
        return dissect(model, data, "features", progress=False, workers=0, **kw)

    out: dict[str, Any] = {"machine": machine_info(), "images": len(data), "shards": args.shards}
    torch.set_num_threads(1)
    run()  # warm-up
    one, out["in_process_1_thread_s"] = timed(run)
    _, out["in_process_1_thread_sharded_s"] = timed(lambda: run(sharding=Sharding(args.shards)))
    torch.set_num_threads(2)
    _, out["in_process_2_threads_s"] = timed(run)
    out["shard_overhead_s"] = (
        out["in_process_1_thread_sharded_s"] - out["in_process_1_thread_s"]
    ) / args.shards
    for workers in (1, 2):
        _, start = timed(lambda w=workers: connect(f"local:{w}"))
        first, cold = timed(lambda: run(sharding=Sharding(args.shards, "local")))
        again, warm = timed(lambda: run(sharding=Sharding(args.shards, "local")))
        ray.shutdown()
        out[f"ray_{workers}"] = {
            "cluster_start_s": start,
            "first_job_s": cold,
            "warm_job_s": warm,
            "equal": same(one, first) and same(one, again),
        }
    base1, base2 = out["in_process_1_thread_s"], out["in_process_2_threads_s"]
    out["ray_1"]["ratio"] = out["ray_1"]["warm_job_s"] / base1  # goal 1.2
    out["ray_2"]["ratio"] = out["ray_2"]["warm_job_s"] / base2  # goal 1.1
    for k, v in out.items():
        print(f"{k}: {v}")
    if args.json:
        atomic_write_json(args.json, out)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
