"""Speed of the pixel attributions against their references, same settings, one run.

For fashion-cnn (32 test-size inputs, 28 px) and a random-weight torchvision resnet18
(2 inputs, 224 px), times each method of :mod:`convlens.interpret.maps.pixel` and the
reference computing the same numbers: captum's Saliency, InputXGradient,
IntegratedGradients (50 Gauss-Legendre points, the same internal batch), NoiseTunnel
over Saliency (16 samples) and Occlusion (the same window and stride; at captum's
default of one window per pass and at the same batch), and pytorch-grad-cam's Guided
Backprop and Guided Grad-CAM (one image per call, as its API takes them). Integrated
Gradients runs with ``tolerance=None`` here (a fixed number of steps, as captum), and
is compared with captum's with and without ``return_convergence_delta`` (ours always
gives the gap); its default refinement is measured on its own. Best of ``--repeats``
runs after a warm-up, ours and the reference taking turns; a call under 0.2 s is
repeated to fill 0.2 s.

    uv run python benchmarks/attribution_speed.py
    uv run python benchmarks/attribution_speed.py --json benchmarks/results/attribution_speed.json
"""

from __future__ import annotations

import argparse
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from captum.attr import InputXGradient, IntegratedGradients, NoiseTunnel, Occlusion, Saliency
from pytorch_grad_cam import GradCAM, GuidedBackpropReLUModel
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from convlens import models
from convlens.core.device import machine_info
from convlens.core.fileio import atomic_write_json
from convlens.interpret.maps import pixel
from timing import best_time, best_times

Pair = tuple[Callable[[], Any], Callable[[], Any]]


def cases(model: torch.nn.Module, x: torch.Tensor, t: torch.Tensor, layer: str, batch: int,
          window: int, stride: int) -> dict[str, Pair]:  # fmt: skip
    """Method -> (convlens, reference), computing the same attributions."""
    c = x.shape[1]
    module = dict(model.named_modules())[layer]

    def ours(method: str, **o: Any) -> Callable[[], Any]:
        return lambda: pixel.attribute(model, x, method, t, layer=layer, **o)

    def guided_reference(grad_cam: bool) -> Callable[[], Any]:
        def run() -> list[Any]:
            out = []
            for i in range(x.shape[0]):
                gb = GuidedBackpropReLUModel(model=model, device="cpu")(
                    x[i : i + 1].clone(), target_category=int(t[i])
                )
                if grad_cam:
                    with GradCAM(model=model, target_layers=[module]) as g:
                        gb = gb * g(x[i : i + 1], [ClassifierOutputTarget(int(t[i]))])[0][..., None]
                out.append(gb)
            return out

        return run

    occlusion = {"sliding_window_shapes": (c, window, window), "strides": (c, stride, stride)}
    return {
        "saliency": (ours("saliency", batch_size=batch),
                     lambda: Saliency(model).attribute(x, target=t)),
        "inputxgradient": (ours("inputxgradient", batch_size=batch),
                           lambda: InputXGradient(model).attribute(x, target=t)),
        "integratedgradients": (
            ours("integratedgradients", tolerance=None, batch_size=batch),
            lambda: IntegratedGradients(model).attribute(x, target=t, internal_batch_size=batch),
        ),
        # ours always gives the completeness gap too: captum's costs the same extra pass
        "integratedgradients (captum with its delta)": (
            ours("integratedgradients", tolerance=None, batch_size=batch),
            lambda: IntegratedGradients(model).attribute(
                x, target=t, internal_batch_size=batch, return_convergence_delta=True
            ),
        ),
        "smoothgrad": (
            ours("smoothgrad", samples=16, stdev=0.3, batch_size=batch),
            lambda: NoiseTunnel(Saliency(model)).attribute(
                x, nt_type="smoothgrad", nt_samples=16, stdevs=0.3, target=t,
                nt_samples_batch_size=max(1, batch // x.shape[0]),
            ),
        ),
        "occlusion (captum one window per pass)": (
            ours("occlusion", window=window, stride=stride, batch_size=batch),
            lambda: Occlusion(model).attribute(x, target=t, **occlusion),
        ),
        "occlusion (captum same batch)": (
            ours("occlusion", window=window, stride=stride, batch_size=batch),
            lambda: Occlusion(model).attribute(
                x, target=t, perturbations_per_eval=max(1, batch // x.shape[0]), **occlusion
            ),
        ),
        "guidedbackprop": (ours("guidedbackprop", batch_size=batch), guided_reference(False)),
        "guidedgradcam": (ours("guidedgradcam", batch_size=batch), guided_reference(True)),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")  # captum: inputs did not require gradients
    info = machine_info()
    print(f"machine: {info['processor']}, {os.cpu_count()} cores, torch {info['torch']}\n")
    torch.manual_seed(0)
    setups = [
        ("fashion-cnn", models.load("fashion-cnn").model, torch.randn(32, 1, 28, 28),
         "features", 512, 4, 2),
        ("resnet18 (random weights, 224 px)",
         models.load("torchvision:resnet18", weights="none").model, torch.randn(2, 3, 224, 224),
         "layer4", 32, 32, 16),
    ]  # fmt: skip
    rows = []
    print("| model | method | convlens s | reference s | reference / convlens |")
    print("|---|---|---|---|---|")
    for name, model, x, layer, batch, window, stride in setups:
        model.eval()
        t = torch.arange(x.shape[0]) % 10
        for method, (mine, theirs) in cases(model, x, t, layer, batch, window, stride).items():
            reps = args.repeats if name == "fashion-cnn" else max(1, args.repeats - 1)
            a, b = best_times([mine, theirs], reps)
            rows.append({"model": name, "method": method, "images": x.shape[0],
                         "convlens_s": a, "reference_s": b, "speedup": b / a})  # fmt: skip
            print(f"| {name} | {method} | {a:.3f} | {b:.3f} | {b / a:.2f}x |", flush=True)
        refined = pixel.attribute(model, x, "integratedgradients", t, batch_size=batch)
        seconds = best_time(
            lambda: pixel.attribute(model, x, "integratedgradients", t, batch_size=batch),  # noqa: B023
            1,
        )
        assert refined.steps is not None
        steps = float(refined.steps.float().mean())
        rows.append({"model": name, "method": "integratedgradients (default refinement)",
                     "images": x.shape[0], "convlens_s": seconds, "mean_steps": steps})  # fmt: skip
        print(f"| {name} | integratedgradients, default refinement (mean {steps:.0f} steps) "
              f"| {seconds:.3f} | | |")  # fmt: skip
    if args.json:
        atomic_write_json(args.json, {"machine": info, "cores": os.cpu_count(), "rows": rows})
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
