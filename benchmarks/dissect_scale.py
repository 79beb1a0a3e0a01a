"""The cost of running a dissection as shards on Ray, against one process, in one run:
fashion-cnn's ``features`` over the 10,000 FashionMNIST test images.

For W = 1 and 2 worker CPUs: a local Ray cluster of W starts (``ray.init``, reported
apart), runs a first, cold job (its workers start and import torch, reported apart),
then ``--rounds`` rounds each run the job in this process with W threads and on the
cluster (W workers of 1 thread), in alternating order, so that both meet the same state
of the machine (on a shared 2-core host one run alone moves by 20%). The figures are the
medians; the ratio is Ray's median over the in-process median.

Where a Ray job's time goes is split by running the same shards as bare tasks that time
themselves: the time inside the tasks (the dissection's own work, in each worker) and
the rest (scheduling, moving the task and the states, merging). Every sharded answer is
checked equal to the one-process answer.

    uv run python benchmarks/dissect_scale.py --json benchmarks/results/dissect_scale.json
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from pathlib import Path
from typing import Any

import ray
import torch

from convlens import models
from convlens.core.device import machine_info
from convlens.core.fileio import atomic_write_json
from convlens.core.shards import Shard, Sharding, connect, plan, run_shards
from convlens.data.sources import FashionSplit
from convlens.interpret.dissect import Dissection, DissectSettings, _Pass, dissect

warnings.filterwarnings("ignore")
FIELDS = ("thresholds", "top_index", "top_maps", "class_means", "rectified_means")


def same(a: Dissection, b: Dissection) -> bool:
    return all(torch.equal(getattr(a, f), getattr(b, f)) for f in FIELDS)


def timed(fn: Any) -> tuple[Any, float]:
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


class Timed:
    """A dissection shard that reports how long it took inside its worker."""

    def __init__(self, task: _Pass) -> None:
        self.task = task

    def __call__(self, shard: Shard) -> dict[str, Any]:
        t = time.perf_counter()
        self.task(shard)
        return {"inside_s": time.perf_counter() - t}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shards", type=int, default=8)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    model, data = models.load("fashion-cnn").model.eval(), FashionSplit("test")

    def run(**kw: Any) -> Dissection:
        return dissect(model, data, "features", progress=False, workers=0, **kw)

    out: dict[str, Any] = {"machine": machine_info(), "images": len(data), "shards": args.shards,
                           "rounds": args.rounds}  # fmt: skip
    torch.set_num_threads(1)
    run()  # warm-up
    one, out["in_process_1_thread_s"] = timed(run)
    _, out["in_process_1_thread_sharded_s"] = timed(lambda: run(sharding=Sharding(args.shards)))
    out["shard_overhead_s"] = (
        out["in_process_1_thread_sharded_s"] - out["in_process_1_thread_s"]
    ) / args.shards
    parts = plan(len(data), args.shards, 128)
    bare = Timed(_Pass(model, data, "features", DissectSettings(workers=0)))
    for workers in (1, 2):
        _, start = timed(lambda w=workers: connect(f"local:{w}"))
        first, cold = timed(lambda: run(sharding=Sharding(args.shards, "local")))
        equal = same(one, first)
        here, there, tasks, inside = [], [], [], []
        for r in range(args.rounds):
            order = ("here", "ray") if r % 2 == 0 else ("ray", "here")
            for where in order:
                torch.set_num_threads(workers)
                if where == "here":
                    here.append(timed(run)[1])
                    continue
                again, seconds = timed(lambda: run(sharding=Sharding(args.shards, "local")))
                there.append(seconds)
                equal &= same(one, again)
            states, seconds = timed(lambda: run_shards(bare, parts, ray="local"))
            tasks.append(seconds)
            inside.append(sum(s["inside_s"] for s in states) / workers)
        ray.shutdown()
        mid_here, mid_ray = statistics.median(here), statistics.median(there)
        out[f"ray_{workers}"] = {
            "cluster_start_s": start,
            "first_job_s": cold,
            "in_process_s": here,
            "ray_job_s": there,
            "bare_tasks_s": tasks,
            "inside_tasks_per_worker_s": inside,
            "equal": equal,
            "in_process_median_s": mid_here,
            "ray_median_s": mid_ray,
            "ratio": mid_ray / mid_here,  # goals: 1.2 for 1 worker, 1.1 for 2
            "outside_tasks_s": statistics.median(tasks) - statistics.median(inside),
        }
    torch.set_num_threads(2)
    for k, v in out.items():
        print(f"{k}: {v}")
    if args.json:
        atomic_write_json(args.json, out)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
