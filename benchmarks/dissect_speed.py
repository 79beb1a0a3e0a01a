"""Dissection against a plain forward pass over the same images, in one run.

For each case: the time of a plain forward pass of the whole model over the data
(the same batches, in inference mode) and the time of ``dissect`` (quantile sketch,
top images with their maps, class means), best of ``--repeats`` runs each, and their
ratio. The atlas is not included (it is written once, after).

    uv run python benchmarks/dissect_speed.py          # about 3 minutes on 2 cores
    uv run python benchmarks/dissect_speed.py --json benchmarks/results/dissect_speed.json

Cases: ``features`` of the shipped fashion-cnn over the 10,000 FashionMNIST test
images; ``layer4`` of resnet18 in the Places365 format (random weights, seed 0) over
1,000 random 224x224 images.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch
from torch import nn

from convlens import models
from convlens.core.device import machine_info
from convlens.core.fileio import atomic_write_json
from convlens.data.sources import FashionSplit, Source, TensorSource
from convlens.interpret.dissect import dissect
from convlens.models import places365
from timing import best_time


def forward_all(model: nn.Module, source: Source, batch_size: int) -> None:
    with torch.inference_mode():
        for batch in source.batches(batch_size):
            model(batch.x)


def case(name: str, model: nn.Module, source: Source, layer: str, batch_size: int,
         repeats: int) -> dict[str, Any]:  # fmt: skip
    model.eval()
    plain = best_time(lambda: forward_all(model, source, batch_size), repeats)
    ours = best_time(
        lambda: dissect(model, source, layer, batch_size=batch_size, progress=False), repeats
    )
    row = {"case": name, "images": len(source), "batch": batch_size, "forward_s": plain,
           "dissect_s": ours, "ratio": ours / plain}  # fmt: skip
    print(row, flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rows = [
        case("fashion-cnn features, FashionMNIST test", models.load("fashion-cnn").model,
             FashionSplit("test"), "features", 256, args.repeats),
    ]  # fmt: skip
    torch.manual_seed(0)
    resnet = places365.build("resnet18")
    x = torch.randn(1000, 3, 224, 224)
    rows.append(case("resnet18 layer4, 224 px", resnet, TensorSource(x), "layer4", 64, 1))
    info = machine_info()
    print(f"\nmachine: {info['processor']}, {info['threads']} threads, torch {info['torch']}\n")
    print("| case | images | batch | forward s | dissect s | ratio |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['case']} | {r['images']} | {r['batch']} | {r['forward_s']:.2f} | "
            f"{r['dissect_s']:.2f} | {r['ratio']:.2f}x |"
        )
    if args.json:
        atomic_write_json(args.json, {"machine": info, "rows": rows})
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
