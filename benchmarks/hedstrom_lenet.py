"""Hedström et al.'s FashionMNIST LeNet setting ("A Fresh Look at Sanity Checks for
Saliency Maps", xAI 2024), reproduced with convlens on a LeNet convlens trained, and set
beside the figures the authors published for it.

Their published figures are the per-method means and standard deviations of the
notebook ``nbs/Tutorial-MPRT-vs-SmoothMPRT-vs-EfficientMPRT-Benchmarking.ipynb`` of
github.com/annahedstroem/sanity-checks-revisited (its saved outputs, column
``fMNIST_LeNet``: 1,000 test images, their LeNet, quantus):

- **MPRT**: top-down cascading randomisation, Spearman rank correlation of the absolute
  maps (lower passes); the notebook does not say whether its score is the last layer's
  similarity or the mean over layers, so both are computed here;
- **eMPRT**: bottom-up, the relative rise of the maps' discrete entropy (100 bins) once
  every layer is randomised (higher passes), on absolute maps (the notebook sets
  ``metric.abs = True`` for every method);
- **sMPRT** (50 noisy copies, noise 0.1 of the range, bottom-up): the paper gives no
  per-method figure for FashionMNIST, so this column is convlens's alone.

The setting here: the first ``--images`` FashionMNIST test images, their true classes,
the LeNet of ``convlens train --preset lenet`` (MetaQuantus's architecture, with module
ReLUs); randomisation seed 42 (quantus's). Methods convlens lacks (LRP-epsilon, LRP-z+,
GradientSHAP) are left out.

    uv run convlens train --out runs/lenet --preset lenet
    uv run python benchmarks/hedstrom_lenet.py --model runs/lenet \\
        --json benchmarks/results/hedstrom_lenet.json --markdown docs/faithfulness/hedstrom-lenet.md
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.stats import spearmanr

from convlens import models
from convlens.core.device import machine_info
from convlens.core.fileio import atomic_write_json, atomic_write_text, markdown_table
from convlens.data import fashion_mnist
from convlens.interpret import sanity
from convlens.interpret.maps import registry

# (mean, std) over 1,000 images, column fMNIST_LeNet of the notebook named above
PUBLISHED = {
    "Random": {"mprt": (0.0057091117, 0.0342375587), "emprt": (0.0, 0.0)},
    "Gradient": {"mprt": (0.0202314744, 0.0172291574), "emprt": (0.0329006358, 0.0498064617)},
    "Saliency": {"mprt": (0.0583896369, 0.0304857458), "emprt": (0.0564705728, 0.0691771817)},
    "GradCAM": {"mprt": (-0.0333209419, 0.1491420181), "emprt": (-0.0187970439, 0.0407175920)},
    "SmoothGrad": {"mprt": (0.0785200752, 0.0361003915), "emprt": (0.0203181617, 0.0709119443)},
    "IntegratedGradients": {
        "mprt": (0.4626692868, 0.1698551416),
        "emprt": (-0.0060853573, 0.0562673313),
    },
    "Guided-Backprop": {
        "mprt": (0.0202314744, 0.0172291573),
        "emprt": (0.0329011010, 0.0498065118),
    },
    "InputXGradient": {
        "mprt": (0.4660107157, 0.1701215059),
        "emprt": (-0.0055830379, 0.0565258760),
    },
    "LRP-Eps": {"mprt": (0.4657321887, 0.1701684295), "emprt": (-0.0055936697, 0.0564379644)},
    "LRP-Z+": {"mprt": (0.7477627812, 0.1068065141), "emprt": (-0.0670853371, 0.0575807454)},
    "GradientShap": {
        "mprt": (0.4623424814, 0.1696871102),
        "emprt": (-0.0070927008, 0.0565803459),
    },
}
# their method -> convlens's (None: the random control); their Gradient is a signed
# gradient, made absolute by the metric, which is convlens's Saliency
METHODS: dict[str, str | None] = {
    "Random": None,
    "Gradient": "saliency",
    "Saliency": "saliency",
    "GradCAM": "gradcam",
    "GradCAM signed": "gradcam",
    "SmoothGrad": "smoothgrad",
    "IntegratedGradients": "integratedgradients",
    "Guided-Backprop": "guidedbackprop",
    "InputXGradient": "inputxgradient",
}
# zennit's SmoothGrad's n_iter; captum's Integrated Gradients' fixed 50 steps
OPTIONS: dict[str, dict[str, object]] = {
    "smoothgrad": {"samples": 20},
    "integratedgradients": {"tolerance": None},
}


def explainer(name: str) -> sanity.Explain:
    """Absolute maps of their method ``name`` (their metrics' ``abs``) by convlens's; the
    random control: uniform noise, a new draw each call (quantus's)."""
    method = METHODS[name]
    if method is None:
        g = torch.Generator().manual_seed(0)
        return lambda model, x, c: torch.rand(x.shape[0], *x.shape[2:], generator=g)
    if name == "GradCAM signed":
        return lambda model, x, c: signed_gradcam(model, x, c).abs()
    explain = sanity.map_explainer(method, options=OPTIONS.get(method))
    return lambda model, x, c: explain(model, x, c).abs()


def signed_gradcam(model: torch.nn.Module, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Grad-CAM on ``conv2`` without its final ReLU: captum's ``LayerGradCam`` default
    (``relu_attributions=False``), which their setting uses."""
    maker = registry.make("gradcam", model, "conv2")
    maker.relu = False
    return sanity.raw_map(maker(x, classes=c[:, None]), x)


def stats(values: torch.Tensor) -> tuple[float, float]:
    v = values.double().numpy()
    return float(np.nanmean(v)), float(np.nanstd(v))


def score(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, name: str, smooth_images: int
) -> dict[str, Any]:
    explain = explainer(name)
    start = time.perf_counter()
    top_down = sanity.model_randomisation(model, x, y, explain, sanity.RandomisationSettings())
    spearman = top_down.similarity["spearman_abs"]
    out: dict[str, Any] = {
        "layers": list(top_down.layers),
        "mprt_last": stats(spearman[-1]),
        "mprt_mean": stats(spearman.mean(0)),
        "mprt_by_layer": [stats(row) for row in spearman],
        "emprt": stats(sanity.efficient_randomisation(model, x, y, explain, seed=42)),
    }
    if smooth_images:
        settings = sanity.RandomisationSettings(order="bottom_up", samples=50, magnitude=0.1)
        n = smooth_images
        smoothed = sanity.model_randomisation(model, x[:n], y[:n], explain, settings)
        out["smprt_last"] = stats(smoothed.last())
    out["seconds"] = time.perf_counter() - start
    return out


def agreement(ours: dict[str, Any], key: str, published: str) -> float:
    """Spearman correlation of the methods' scores by ``key`` with the published ones
    (how alike the two orders are), over the methods both have: their Saliency is left
    out (it and their Gradient are both convlens's Saliency), and Grad-CAM is taken as
    their setting computes it (without its ReLU)."""
    names = [n for n in ours if n not in ("Saliency", "GradCAM")]
    a = [ours[n][key][0] for n in names]
    b = [PUBLISHED[n.split()[0]][published][0] for n in names]
    return float(spearmanr(a, b).statistic)


def cell(pair: tuple[float, float] | None) -> str:
    return "" if pair is None else f"{pair[0]:.3f} ± {pair[1]:.3f}"


def markdown(results: dict[str, Any]) -> str:
    rows = []
    for name, r in results["methods"].items():
        published = PUBLISHED[name.split()[0]]
        ours = METHODS[name] or "uniform noise"
        ours += " without ReLU" if name == "GradCAM signed" else ""
        rows.append(
            [
                f"{name.split()[0]} ({ours})",
                cell(published["mprt"]),
                cell(r["mprt_last"]),
                cell(r["mprt_mean"]),
                cell(published["emprt"]),
                cell(r["emprt"]),
                cell(r.get("smprt_last")),
            ]
        )
    for name in ("LRP-Eps", "LRP-Z+", "GradientShap"):
        rows.append(
            [
                f"{name} (not in convlens)",
                cell(PUBLISHED[name]["mprt"]),
                "",
                "",
                cell(PUBLISHED[name]["emprt"]),
                "",
                "",
            ]
        )
    header = [
        "method (convlens's)",
        "MPRT published",
        "MPRT last layer",
        "MPRT mean of layers",
        "eMPRT published",
        "eMPRT",
        f"sMPRT ({results['smooth_images']} images)",
    ]
    a = results["agreement"]
    return (
        markdown_table(header, rows)
        + f"\nLeNet test top-1 {results['test_top1']:.4f}; {results['images']} test images. "
        f"Order of the methods against the published order (Spearman): MPRT last layer "
        f"{a['mprt_last']:.2f}, MPRT mean of layers {a['mprt_mean']:.2f}, eMPRT {a['emprt']:.2f}.\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a run of `convlens train --preset lenet`")
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--smooth-images", type=int, default=100, help="sMPRT's (0: none)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args()
    loaded = models.load(args.model)
    model = loaded.model.eval()
    data = fashion_mnist.load_fashion_mnist("test")
    x = fashion_mnist.to_float(data.images[: args.images])
    y = torch.as_tensor(data.labels[: args.images]).long()
    results: dict[str, Any] = {
        "machine": machine_info(),
        "images": len(x),
        "smooth_images": args.smooth_images,
        "test_top1": loaded.metrics.get("test_top1"),
        "methods": {},
    }
    for name in METHODS:
        r = score(model, x, y, name, args.smooth_images)
        results["methods"][name] = r
        published = PUBLISHED[name.split()[0]]
        print(
            f"{name:20s} MPRT last {cell(r['mprt_last'])} mean {cell(r['mprt_mean'])} "
            f"(published {cell(published['mprt'])}); eMPRT {cell(r['emprt'])} "
            f"(published {cell(published['emprt'])}); sMPRT {cell(r.get('smprt_last'))}; "
            f"{r['seconds']:.0f} s",
            flush=True,
        )
    m = results["methods"]
    results["agreement"] = {
        "mprt_last": agreement(m, "mprt_last", "mprt"),
        "mprt_mean": agreement(m, "mprt_mean", "mprt"),
        "emprt": agreement(m, "emprt", "emprt"),
    }
    print(markdown(results))
    if args.json:
        atomic_write_json(args.json, results)
    if args.markdown:
        atomic_write_text(args.markdown, markdown(results))


if __name__ == "__main__":
    main()
