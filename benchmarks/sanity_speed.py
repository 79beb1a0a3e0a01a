"""convlens's sanity checks and removal curves against quantus 0.6.0's, per image, in one
run (issue 42: at least 10x quantus for MPRT, ROAD and pixel-flipping). The same metric,
images, maps and seeds on both sides; each side timed once, and its scores compared:

- **MPRT**, bottom up, every layer with parameters (quantus's ``MPRT``; convlens's
  ``model_randomisation``), the maps captum's Saliency on both sides (quantus's
  ``quantus.explain``, convlens's ``saliency``, equal maps);
- **ROAD**, most relevant first at 10%, 20%, ..., 90% (quantus's ``ROAD``; convlens's
  ``road_curves`` with its count rule, quantus's), on the Saliency maps;
- **pixel-flipping**, the deletion curve in 28 steps to a zero baseline (quantus's
  ``PixelFlipping`` with ``perturb_baseline=0``; convlens's ``deletion_curve``).

Two settings: the shipped fashion-cnn on 64 FashionMNIST test images, and a randomly
initialised torchvision resnet18 on 8 random 224 x 224 images, with a one-channel stem:
quantus 0.6.0's ROAD fails on three-channel images (its imputation indexes the pixels
with indices over channels and pixels: an ``IndexError``).

    uv run python benchmarks/sanity_speed.py [--json benchmarks/results/sanity_speed.json]
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from convlens import models
from convlens.core.device import machine_info
from convlens.core.fileio import atomic_write_json
from convlens.data import fashion_mnist
from convlens.interpret import road, sanity
from convlens.interpret.faithfulness import deletion_curve

PERCENTAGES = [10, 20, 30, 40, 50, 60, 70, 80, 90]
STEPS = 28


def fashion() -> tuple[torch.nn.Module, torch.Tensor]:
    data = fashion_mnist.load_fashion_mnist("test")
    return models.load("fashion-cnn").model.eval(), fashion_mnist.to_float(data.images[:64])


def resnet18() -> tuple[torch.nn.Module, torch.Tensor]:
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None)
    model.conv1 = torch.nn.Conv2d(1, 64, 7, 2, 3, bias=False)  # see the module doc
    return model.eval(), torch.randn(8, 1, 224, 224, generator=torch.Generator().manual_seed(1))


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def quantus_explain(model: torch.nn.Module, inputs: np.ndarray, targets: np.ndarray,
                    **kwargs: Any) -> np.ndarray:  # fmt: skip
    import quantus

    return quantus.explain(model, inputs, targets, method="Saliency")


def mprt(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
    import quantus

    explain = sanity.map_explainer("saliency")
    settings = sanity.RandomisationSettings(order="bottom_up", seed=42)
    ours, ours_s = timed(lambda: sanity.model_randomisation(model, x, y, explain, settings))
    metric = quantus.MPRT(layer_order="bottom_up", seed=42, disable_warnings=True)
    theirs, theirs_s = timed(lambda: metric(model=model, x_batch=x.numpy(), y_batch=y.numpy(),
                                            a_batch=None, explain_func=quantus_explain,
                                            device="cpu", batch_size=len(x)))  # fmt: skip
    last = np.asarray(theirs[ours.layers[-1]])
    return row(ours_s, theirs_s, len(x), float(np.nanmax(np.abs(ours.last().numpy() - last))))


def road_speed(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
               maps: torch.Tensor) -> dict[str, Any]:  # fmt: skip
    import quantus

    settings = road.RoadSettings(fractions=tuple(p / 100 for p in PERCENTAGES), seed=5)
    ours, ours_s = timed(lambda: road.road_curves(model, x, maps, y, "morf", settings))
    metric = quantus.ROAD(percentages=PERCENTAGES, noise=0.01, disable_warnings=True)
    np.random.seed(5)
    a_batch = maps[:, None].numpy()
    theirs, theirs_s = timed(lambda: metric(model=model, x_batch=x.numpy(), y_batch=y.numpy(),
                                            a_batch=a_batch, device="cpu",
                                            batch_size=len(x)))  # fmt: skip
    accuracy = ours.correct.double().mean(0).numpy()
    difference = float(np.max(np.abs(accuracy - np.array([theirs[p] for p in PERCENTAGES]))))
    return row(ours_s, theirs_s, len(x), difference)


def pixel_flipping(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
                   maps: torch.Tensor) -> dict[str, Any]:  # fmt: skip
    import quantus

    ours, ours_s = timed(lambda: deletion_curve(model, x, maps, y, steps=STEPS)[1])
    channels, positions = x.shape[1], x.shape[2] * x.shape[3]
    metric = quantus.PixelFlipping(features_in_step=channels * positions // STEPS,
                                   perturb_baseline=0.0, normalise=False,
                                   disable_warnings=True)  # fmt: skip
    theirs, theirs_s = timed(lambda: metric(model=model, x_batch=x.numpy(), y_batch=y.numpy(),
                                            a_batch=maps[:, None].numpy(), device="cpu",
                                            softmax=True, batch_size=len(x)))  # fmt: skip
    difference = float(np.max(np.abs(ours[:, 1:].numpy() - np.asarray(theirs))))
    return row(ours_s, theirs_s, len(x), difference)


def row(ours: float, theirs: float, n: int, difference: float) -> dict[str, Any]:
    return {"convlens_s_per_image": ours / n, "quantus_s_per_image": theirs / n,
            "speedup": theirs / ours, "max_difference": difference}  # fmt: skip


def setting(name: str, model: torch.nn.Module, x: torch.Tensor) -> dict[str, Any]:
    with torch.no_grad():
        y = model(x).argmax(1)
    maps = sanity.map_explainer("saliency")(model, x, y)
    out = {"images": len(x), "size": list(x.shape[1:])}
    for metric, fn in (("MPRT", lambda: mprt(model, x, y)),
                       ("ROAD", lambda: road_speed(model, x, y, maps)),
                       ("pixel-flipping", lambda: pixel_flipping(model, x, y, maps))):  # fmt: skip
        out[metric] = fn()
        r = out[metric]
        print(f"{name:10s} {metric:15s} convlens {r['convlens_s_per_image']:.4f} s/image, "
              f"quantus {r['quantus_s_per_image']:.4f} s/image: {r['speedup']:.1f}x "
              f"(scores differ by {r['max_difference']:.2g})", flush=True)  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path)
    parser.add_argument("--only", choices=("fashion-cnn", "resnet18"))
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    results: dict[str, Any] = {"machine": machine_info()}
    for name, make in (("fashion-cnn", fashion), ("resnet18", resnet18)):
        if args.only in (None, name):
            results[name] = setting(name, *make())
    if args.json:
        atomic_write_json(args.json, results)


if __name__ == "__main__":
    main()
