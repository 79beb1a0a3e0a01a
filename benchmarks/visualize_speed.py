"""Speed of feature visualisation next to torch-lucent's, in one run, same objective,
steps and size.

- resnet18 (random weights, seed 0), ``layer2``, channel objective, 128x128 Fourier
  images with decorrelated colour, Adam at lr 0.05, pad 12 / jitter 8 / scale 0.9-1.1 /
  jitter 4 (no rotation: lucent's rotation needs a kornia from 2020), ImageNet
  normalisation, ``--steps`` steps: one unit, then a batch of 16 units in one
  optimisation (lucent: a batch of 16 images, the sum of 16 channel objectives);
- ours alone: ``convlens visualize fashion-cnn --all`` (128 units of ``features``, 256
  steps, defaults), the issue's 60 s goal.

    uv run python benchmarks/visualize_speed.py --json benchmarks/results/visualize_speed.json
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path
from typing import Any

import torch
import torchvision

from convlens import models
from convlens.core.fileio import atomic_write_json
from convlens.core.precision import precision
from convlens.data.images import IMAGENET_PREPROCESSING
from convlens.interpret import visualize as v
from convlens.interpret.objectives import channel
from timing import add_device_args, placed, run_record, synced

warnings.filterwarnings("ignore")
SIZE = 128


def resnet18() -> torch.nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None).eval()


def ours(model: torch.nn.Module, units: list[int], steps: int) -> float:
    t = v.Transforms.for_size(224)  # lucent's pixel amounts, as its standard set
    same = v.Transforms(t.pad, t.jitter, t.scales, (0.0,), t.jitter_after)
    settings = v.VisualizeSettings(steps, lr=0.05, size=SIZE, redirect_steps=0, transforms=same)
    return synced(
        lambda: v.visualize(model, channel("layer2", units), IMAGENET_PREPROCESSING, settings)
    )[1]


def lucent(model: torch.nn.Module, units: list[int], steps: int) -> float:
    from lucent.optvis import objectives, param, render, transform

    transforms = [
        transform.pad(12, mode="constant", constant_value=0.5),
        transform.jitter(8),
        transform.random_scale([1 + (i - 5) / 50.0 for i in range(11)]),
        transform.jitter(4),
    ]
    objective = sum(
        (objectives.channel("layer2", u, batch=i) for i, u in enumerate(units)),
        start=objectives.channel("layer2", units[0], batch=0) * 0,
    ) if len(units) > 1 else objectives.channel("layer2", units[0])  # fmt: skip
    return synced(lambda: render.render_vis(
        model, objective, lambda: param.image(SIZE, batch=len(units)), transforms=transforms,
        thresholds=(steps,), show_image=False, progress=False, fixed_image_size=SIZE,
    ))[1]  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=256)
    p.add_argument("--json", type=Path)
    add_device_args(p)
    args = p.parse_args()
    device, _ = placed(args)
    model = resnet18().to(device)
    out: dict[str, Any] = {"machine": run_record(args, device), "steps": args.steps, "size": SIZE}
    for name, units in (("one unit", [5]), ("16 units", list(range(16)))):
        with precision(args.precision, device):  # ours so; lucent in its own fp32
            a = ours(model, units, args.steps)
        b = lucent(model, units, args.steps)
        out[name] = {"ours_s": a, "lucent_s": b, "ratio": b / a}
        print(f"resnet18 layer2, {name}: ours {a:.1f} s, lucent {b:.1f} s, {b / a:.2f}x")
    lm = models.load("fashion-cnn")
    lm.model.to(device)
    with precision(args.precision, device):
        seconds = synced(
            lambda: v.visualize(lm.model, channel("features", range(128)), lm.preprocessing)
        )[1]
    out["fashion-cnn --all"] = {"units": 128, "steps": 256, "seconds": seconds}
    print(f"fashion-cnn features, 128 units, 256 steps: {seconds:.1f} s")
    if args.json:
        atomic_write_json(args.json, out)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
