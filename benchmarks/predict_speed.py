"""Speed of ``evaluate`` on the CPU: the shipped fashion-cnn over the 10,000 FashionMNIST
test images with flip TTA, in one run, one thread, alternating rounds, best of each:

- ``before``: the model itself, passes of 1,000 images (``evaluate`` until session 10);
- ``copy, 1000``: through the channels-last copy, passes of 1,000;
- ``default``: the copy, passes sized by ``core.device.pass_batch`` (256 here).

Every variant's accuracy is printed: the copy changes float rounding only.

    uv run python benchmarks/predict_speed.py --json benchmarks/results/predict_speed.json
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch

from convlens import inference, models
from convlens.core.device import machine_info
from convlens.core.fileio import atomic_write_json
from convlens.data import fashion_mnist as fm


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    torch.set_num_threads(1)
    test = fm.load_fashion_mnist("test")
    model = models.load("fashion-cnn").model
    copy = inference.channels_last_twin
    variants: dict[str, tuple[Any, int | None]] = {
        "before": (lambda m: m, 1000),
        "copy, 1000": (copy, 1000),
        "default": (copy, None),
    }
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    top1: dict[str, float] = {}
    for _ in range(args.rounds):
        for name, (twin, batch) in variants.items():
            inference.channels_last_twin = twin
            t = time.perf_counter()
            top1[name] = inference.evaluate(
                model, test.images, test.labels, tta=True, batch_size=batch
            )
            seconds[name].append(time.perf_counter() - t)
    inference.channels_last_twin = copy
    result = {"machine": machine_info(), "threads": 1, "images": len(test.labels)}
    for name in variants:
        best = min(seconds[name])
        result[name] = {"seconds": seconds[name], "best_s": best, "top1": top1[name]}
        print(f"{name:>11}: best {best:5.2f} s of {len(seconds[name])}, top-1 {top1[name]:.4f}")
    if args.json:
        atomic_write_json(args.json, result)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
