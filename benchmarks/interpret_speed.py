"""Speed of top-5 class activation maps and of the fewest-units search, next to
torchcam's CAM and pytorch-grad-cam's GradCAM computing the same maps in the same run.

For each model it prints images/s of top-5 CAM and Grad-CAM on a batch, the same for
the reference libraries, the ratios, and the largest absolute difference between our
maps and theirs (both min-max normalised). Then it times the fewest-units search:
closed form on the layer feeding global pooling, greedy forward search on an inner
layer.

The reference libraries are in the dev dependency group that `make test` installs:

    uv run python benchmarks/interpret_speed.py

Models: torchvision's resnet18 at 224x224 with random weights (seed 0; speed and
agreement do not depend on the weights, and nothing is downloaded), and the shipped
FashionMNIST model on test images.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision
from torch import nn

from convlens import models
from convlens.core.device import machine_info
from convlens.core.fileio import atomic_write_json
from convlens.data import fashion_mnist as data
from convlens.interpret import ablation
from convlens.interpret.heads import find_gap_head
from convlens.interpret.maps import cam
from convlens.interpret.maps.base import normalize_maps
from timing import best_time


def torchcam_top5(model: nn.Module, x: torch.Tensor, layer: str, fc: str) -> torch.Tensor:
    """torchcam's CAM for the top-5 classes: one forward, then one map per rank."""
    from torchcam.methods import CAM as TorchcamCAM

    with TorchcamCAM(model, target_layer=layer, fc_layer=fc) as extractor, torch.no_grad():
        scores = model(x)
        top = scores.topk(5, 1).indices
        maps = [extractor(top[:, t].tolist(), scores)[0] for t in range(5)]
    return torch.stack(maps, 1)  # [N, 5, h, w], min-max normalised


def gradcam_lib_top5(model: nn.Module, x: torch.Tensor, layer: nn.Module) -> np.ndarray:
    """pytorch-grad-cam's GradCAM for the top-5 classes, upsampled to the input."""
    from pytorch_grad_cam import GradCAM as LibGradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    with torch.no_grad():
        top = model(x).topk(5, 1).indices
    out = []
    with LibGradCAM(model=model, target_layers=[layer]) as extractor:
        for t in range(5):
            targets = [ClassifierOutputTarget(int(c)) for c in top[:, t]]
            out.append(extractor(input_tensor=x, targets=targets))
    return np.stack(out, 1)  # [N, 5, H, W]


def bench_model(
    name: str, model: nn.Module, x: torch.Tensor, inner: str, repeats: int
) -> dict[str, Any]:
    model.eval()
    n = x.shape[0]
    head = find_gap_head(model, x)
    ours_cam = cam.CAM(model)
    ours_grad = cam.GradCAM(model, head.layer)
    row: dict[str, Any] = {"model": name, "batch": n, "input": list(x.shape[1:])}

    t = best_time(lambda: ours_cam(x, top=5), repeats)
    row["cam_img_s"] = n / t
    t_ref = best_time(lambda: torchcam_top5(model, x, head.layer, head.fc), repeats)
    row["torchcam_cam_img_s"] = n / t_ref
    mine = ours_cam(x, top=5).normalized
    theirs = torchcam_top5(model, x, head.layer, head.fc)
    row["cam_max_abs_diff_vs_torchcam"] = float((mine - theirs).abs().max())

    t = best_time(lambda: ours_grad(x, top=5), repeats)
    row["gradcam_img_s"] = n / t
    layer_module = dict(model.named_modules())[head.layer]
    t_ref = best_time(lambda: gradcam_lib_top5(model, x, layer_module), repeats)
    row["pytorch_grad_cam_img_s"] = n / t_ref
    # pytorch-grad-cam min-max scales again after resizing; do the same to compare.
    mine_up = normalize_maps(ours_grad(x, top=5).upsampled).numpy()
    row["gradcam_max_abs_diff_vs_pytorch_grad_cam"] = float(
        np.abs(mine_up - gradcam_lib_top5(model, x, layer_module)).max()
    )

    one = x[:1]
    t = best_time(lambda: ablation.fewest_units(model, one), repeats)
    r = ablation.fewest_units(model, one)
    row["fewest_closed_form_s"] = t
    row["fewest_closed_form_units"] = len(r.units) if r.found else None
    t0 = time.perf_counter()
    g = ablation.fewest_units(model, one, layer=inner, max_units=8)
    row["fewest_greedy_s"] = time.perf_counter() - t0
    row["fewest_greedy_layer"] = inner
    row["fewest_greedy_units"] = len(g.units) if g.found else None
    row["fewest_greedy_passes"] = g.forward_passes
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-resnet", type=int, default=16)
    parser.add_argument("--batch-fashion", type=int, default=256)
    parser.add_argument(
        "--json", type=Path, default=Path("benchmarks/results/interpret_speed.json")
    )
    args = parser.parse_args()

    import pytorch_grad_cam  # noqa: F401  (fail early when the extras are missing)
    import torchcam  # noqa: F401

    rows = []
    torch.manual_seed(0)
    resnet = torchvision.models.resnet18()
    x = torch.randn(args.batch_resnet, 3, 224, 224)
    rows.append(bench_model("resnet18 (random weights)", resnet, x, "layer3", args.repeats))

    fashion = models.load("fashion-cnn").model
    test = data.load_fashion_mnist("test")
    xf = data.to_float(test.images[: args.batch_fashion])
    rows.append(bench_model("fashion-cnn", fashion, xf, "features.1", args.repeats))

    info = {
        **machine_info(),
        "torchcam": importlib.metadata.version("torchcam"),
        "pytorch_grad_cam": importlib.metadata.version("grad-cam"),
    }
    print(f"machine: {info['processor']}, {info['threads']} threads, torch {info['torch']}")
    print(f"torchcam {info['torchcam']}, pytorch-grad-cam {info['pytorch_grad_cam']}\n")
    print(
        "| model | batch | top-5 CAM img/s (torchcam, ratio) | max diff | "
        "top-5 Grad-CAM img/s (pytorch-grad-cam, ratio) | max diff | fewest units: closed "
        "form | greedy (layer, passes) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        cam_ratio = r["cam_img_s"] / r["torchcam_cam_img_s"]
        grad_ratio = r["gradcam_img_s"] / r["pytorch_grad_cam_img_s"]
        print(
            f"| {r['model']} | {r['batch']} | {r['cam_img_s']:.0f} "
            f"({r['torchcam_cam_img_s']:.0f}, {cam_ratio:.1f}x) | "
            f"{r['cam_max_abs_diff_vs_torchcam']:.1e} | {r['gradcam_img_s']:.1f} "
            f"({r['pytorch_grad_cam_img_s']:.1f}, {grad_ratio:.1f}x) | "
            f"{r['gradcam_max_abs_diff_vs_pytorch_grad_cam']:.1e} | "
            f"{r['fewest_closed_form_s'] * 1e3:.1f} ms, {r['fewest_closed_form_units']} units | "
            f"{r['fewest_greedy_s']:.1f} s ({r['fewest_greedy_layer']}, "
            f"{r['fewest_greedy_passes']}), {r['fewest_greedy_units']} units |"
        )
    atomic_write_json(args.json, {"machine": info, "rows": rows})
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
