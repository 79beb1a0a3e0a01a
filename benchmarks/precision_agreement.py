"""Which analyses survive bf16: each one run in fp32 and under bf16 autocast on the same
inputs, with issue 38's goals. The rows decide ``--precision auto``
(:data:`convlens.core.precision.BF16_AGREES`, which a test keeps equal to this file's
figures).

- ``maps``: every map method of the registry, for the fp32 top-1 class of each image:
  the median over images of Spearman's rank correlation between the two maps (as drawn,
  at the input's size) at least 0.99, and the median IoU of their top-10% regions at
  least 0.9;
- ``faithfulness``: deletion and insertion curves of the same (fp32 Grad-CAM) maps;
  their mean AUCs, the figures of the table, within 0.01 of fp32's; and the whole table
  (the CAM family's maps and curves all in bf16) beside it;
- ``dissect``: each unit's threshold within 1% of fp32's (live units), and at least 95%
  of each unit's top-8 images the same, on average;
- ``fewest_units``: every set found in bf16 flips the prediction when checked in fp32
  (``fewest_units`` checks and searches again in fp32 when one does not; the row counts
  how often it had to);
- ``visualize``: issue 28's figure, the share of live units of fashion-cnn's
  ``features`` whose picture (made in bf16, measured in fp32) reaches 1.5x the unit's
  test-set maximum, at least 90%.

Models: the shipped fashion-cnn on FashionMNIST test images, and resnet50 with random
weights (seed 0) on smooth random images at ``--size``. Where bf16 has no hardware (a CPU
without AVX512-BF16 or AMX) autocast emulates it: the same rounding, much slower, which
is why resnet50 runs at 112 px and the four slow methods on fewer images by default.

    uv run python benchmarks/precision_agreement.py
    uv run python benchmarks/precision_agreement.py --only maps --models resnet50
    uv run python benchmarks/precision_agreement.py --table  # docs/precision.md's table
"""

from __future__ import annotations

import argparse
import json
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision
from scipy.stats import spearmanr

from convlens import models
from convlens.core.device import machine_info, resolve_device
from convlens.core.fileio import atomic_write_json
from convlens.core.hooks import activations
from convlens.core.precision import native, precision
from convlens.data import fashion_mnist as fm
from convlens.data.images import IMAGENET_PREPROCESSING, Preprocessing
from convlens.data.sources import FashionSplit, TensorSource
from convlens.interpret import ablation, faithfulness
from convlens.interpret import visualize as v
from convlens.interpret.dissect import dissect
from convlens.interpret.maps import registry
from convlens.interpret.objectives import channel
from timing import synced

warnings.filterwarnings("ignore")
PARTS = ("maps", "faithfulness", "dissect", "fewest_units", "visualize")
SLOW = (
    "scorecam",
    "ablationcam",
    "iscam",
    "sscam",
    "integratedgradients",
    "smoothgrad",
    "occlusion",
)
OUT = Path("benchmarks/results/precision/agreement.json")
# Every committed measurement, which --table prints and --precision auto follows: the
# CPU without bf16 units (emulated), the CPU with them, and one GPU.
COMMITTED = (
    OUT,
    Path("benchmarks/results/precision/agreement_bf16_units.json"),
    Path("benchmarks/results/gpu/agreement_cuda.json"),
)
CPU = torch.device("cpu")
DEVICE = CPU  # --device: where the models run (the inputs stay on the CPU)


class Subject:
    """A model, its images and what the parts read of it."""

    def __init__(self, name: str, n: int, size: int) -> None:
        self.name = name
        if name == "fashion-cnn":
            loaded = models.load("fashion-cnn")
            self.model, self.preprocessing = loaded.model.eval(), loaded.preprocessing
            test = FashionSplit("test")
            self.x, self.batch = fm.to_float(test.images[:n]), 50
            self.dissect_source: Any = test
            self.layer, self.search_layer = "features", "features"
        else:
            torch.manual_seed(0)
            self.model = torchvision.models.resnet50(weights=None).eval()
            self.preprocessing = IMAGENET_PREPROCESSING
            self.x, self.batch = smooth_images(n, size), 4
            self.dissect_source = TensorSource(smooth_images(64, size, seed=1))
            self.layer, self.search_layer = "layer4", "layer4"
        self.model.to(DEVICE)
        with torch.no_grad():
            self.classes = torch.cat(
                [self.model(b.to(DEVICE)).argmax(1).cpu() for b in self.x.split(self.batch)]
            )


def smooth_images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    """Noise at 1/8 of ``size``, upsampled and normalised: images with regions."""
    g = torch.Generator().manual_seed(seed)
    small = torch.rand(n, 3, size // 8, size // 8, generator=g)
    x = torch.nn.functional.interpolate(small, size=(size, size), mode="bilinear")
    mean = torch.tensor(IMAGENET_PREPROCESSING.mean)[:, None, None]
    std = torch.tensor(IMAGENET_PREPROCESSING.std)[:, None, None]
    return (x - mean) / std


def both(fn: Callable[[], Any]) -> tuple[Any, Any, float, float]:
    """``fn()`` in fp32 and in bf16 (emulated where there is no hardware), timed."""
    fp32, t32 = synced(fn)
    with precision("bf16", DEVICE, emulate=DEVICE.type == "cpu"):
        bf16, t16 = synced(fn)
    return fp32, bf16, t32, t16


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman's rank correlation of two maps (ties share their mean rank); 1 for two
    constant maps, 0 for one."""
    a_, b_ = a.flatten().double().numpy(), b.flatten().double().numpy()
    if np.ptp(a_) == 0 or np.ptp(b_) == 0:
        return float(np.ptp(a_) == np.ptp(b_))
    return float(spearmanr(a_, b_).statistic)


def top_iou(a: torch.Tensor, b: torch.Tensor, share: float = 0.1) -> float:
    k = max(1, round(share * a.numel()))
    top_a = set(a.flatten().topk(k).indices.tolist())
    top_b = set(b.flatten().topk(k).indices.tolist())
    return len(top_a & top_b) / len(top_a | top_b)


def part_maps(s: Subject, args: argparse.Namespace) -> Iterator[dict[str, Any]]:
    for method in args.methods or registry.names():
        n = (
            min(args.slow_images, len(s.x))
            if method in SLOW and s.name != "fashion-cnn"
            else len(s.x)
        )
        x, c = s.x[:n], s.classes[:n, None]

        def run(x: torch.Tensor = x, c: torch.Tensor = c, m: str = method) -> torch.Tensor:
            parts = [
                registry.class_maps(s.model, xb, method=m, classes=cb).upsampled[:, 0]
                for xb, cb in zip(x.split(s.batch), c.split(s.batch), strict=True)
            ]
            return torch.cat(parts)

        fp32, bf16, t32, t16 = both(run)
        rho = [spearman(a, b) for a, b in zip(fp32, bf16, strict=True)]
        iou = [top_iou(a, b) for a, b in zip(fp32, bf16, strict=True)]
        row = {
            "analysis": method,
            "images": n,
            "spearman_median": float(np.median(rho)),
            "spearman_p10": float(np.percentile(rho, 10)),
            "top10_iou_median": float(np.median(iou)),
            "top10_iou_p10": float(np.percentile(iou, 10)),
            "seconds_fp32": t32,
            "seconds_bf16": t16,
        }
        row["agrees"] = row["spearman_median"] >= 0.99 and row["top10_iou_median"] >= 0.9
        yield row


def part_faithfulness(s: Subject, args: argparse.Namespace) -> Iterator[dict[str, Any]]:
    n = len(s.x) if s.name == "fashion-cnn" else min(args.slow_images, len(s.x))
    x, c = s.x[:n], s.classes[:n]
    maps = torch.cat(
        [
            registry.class_maps(s.model, xb, method="gradcam", classes=cb[:, None]).upsampled[:, 0]
            for xb, cb in zip(x.split(s.batch), c.split(s.batch), strict=True)
        ]
    )
    fp32, bf16, t32, t16 = both(
        lambda: faithfulness.faithfulness(s.model, x, maps, c, steps=20, batch_size=s.batch * 8)
    )
    gaps = {
        k: abs(float(getattr(fp32, k).mean()) - float(getattr(bf16, k).mean()))
        for k in ("deletion_auc", "insertion_auc")
    }
    row: dict[str, Any] = {
        "analysis": "faithfulness",
        "images": n,
        "deletion_auc_gap": gaps["deletion_auc"],
        "insertion_auc_gap": gaps["insertion_auc"],
        "seconds_fp32": t32,
        "seconds_bf16": t16,
    }
    if s.name == "fashion-cnn":  # the whole table, maps and curves, in bf16
        methods = registry.names(registry.CAM)
        t_fp, t_bf, *_ = both(
            lambda: faithfulness.score_methods(
                s.model, list(x.split(s.batch)), methods, steps=20, progress=False
            )
        )
        row["table_auc_gap"] = max(
            max(abs(a.deletion_auc - b.deletion_auc), abs(a.insertion_auc - b.insertion_auc))
            for a, b in zip(t_fp, t_bf, strict=True)
        )
    row["agrees"] = max(gaps.values()) <= 0.01
    yield row


def part_dissect(s: Subject, args: argparse.Namespace) -> Iterator[dict[str, Any]]:
    fp32, bf16, t32, t16 = both(lambda: dissect(s.model, s.dissect_source, s.layer, progress=False))
    live = fp32.thresholds > 0
    rel = ((bf16.thresholds - fp32.thresholds).abs() / fp32.thresholds.abs().clamp_min(1e-12))[live]
    same = [
        len(set(a.tolist()) & set(b.tolist())) / len(a)
        for a, b in zip(fp32.top_index[live], bf16.top_index[live], strict=True)
    ]
    row = {
        "analysis": "dissect",
        "images": fp32.images,
        "units": int(live.sum()),
        "threshold_within_1pct": float((rel <= 0.01).float().mean()),
        "threshold_rel_max": float(rel.max()),
        "top8_same_mean": float(np.mean(same)),
        "top8_same_min": float(np.min(same)),
        "seconds_fp32": t32,
        "seconds_bf16": t16,
    }
    row["agrees"] = row["threshold_within_1pct"] == 1.0 and row["top8_same_mean"] >= 0.95
    yield row


def part_fewest_units(s: Subject, args: argparse.Namespace) -> Iterator[dict[str, Any]]:
    n = len(s.x) if s.name == "fashion-cnn" else min(16, len(s.x))
    t32 = t16 = 0.0
    found = fallback = flips = 0
    sizes: list[tuple[int, int]] = []
    for i in range(n):
        xi = s.x[i : i + 1]
        a, b, ta, tb = both(lambda xi=xi: ablation.fewest_units(s.model, xi, s.search_layer))
        t32, t16 = t32 + ta, t16 + tb
        if b.found:
            found += 1
            fallback += b.precision == "fp32"
            with torch.no_grad(), ablation.ablated(s.model, b.layer, b.units, b.mode):
                flips += int(s.model(xi.to(DEVICE)).argmax()) != b.original_class
            sizes.append((len(a.units), len(b.units)))
    row = {
        "analysis": "fewest_units",
        "images": n,
        "found": found,
        "flip_in_fp32": flips,
        "searched_again_in_fp32": fallback,
        "same_size": sum(x == y for x, y in sizes),
        "larger_in_bf16": sum(y > x for x, y in sizes),
        "seconds_fp32": t32,
        "seconds_bf16": t16,
    }
    row["agrees"] = flips == found and fallback <= 0.1 * max(found, 1)
    yield row


def part_visualize(s: Subject, args: argparse.Namespace) -> Iterator[dict[str, Any]]:
    if s.name != "fashion-cnn":  # issue 28's figure is fashion-cnn's
        return
    units = list(range(128))
    hi, _ = v.dataset_extremes(s.model, FashionSplit("test"), "features", units)

    def reach(settings: v.VisualizeSettings) -> Callable[[], float]:
        def run() -> float:
            pictures = v.visualize(s.model, channel("features", units), s.preprocessing, settings)
            return measured(s.model, pictures, s.preprocessing, hi)

        return run

    share32, share16, t32, t16 = both(reach(v.VisualizeSettings(steps=args.visualize_steps)))
    yield {
        "analysis": "visualize",
        "images": 128,
        "steps": args.visualize_steps,
        "reach_1_5x_fp32": share32,
        "reach_1_5x_bf16": share16,
        "seconds_fp32": t32,
        "seconds_bf16": t16,
        "agrees": share16 >= 0.9,
    }


def measured(
    model: torch.nn.Module, pictures: v.Visualization, p: Preprocessing, hi: torch.Tensor
) -> float:
    """The share of live units whose picture, measured in fp32, reaches 1.5x ``hi``."""
    x = pictures.images[:, 0]  # [U, C, H, W] in [0, 1]
    mean = torch.tensor(p.mean)[:, None, None]
    std = torch.tensor(p.std)[:, None, None]
    with torch.no_grad():
        _, acts = activations(model, ((x - mean) / std).to(DEVICE), "features")
    act = acts["features"].float().mean((2, 3)).diagonal().cpu()
    live = [k for k in range(len(act)) if k not in pictures.dead and hi[k] > 0]
    return float((act[live] / hi[live] >= 1.5).float().mean())


def measured_on(figures: dict[str, Any]) -> str:
    """Where a file's rows were measured: the GPU, or the CPU and whether its bf16 was
    its own units' or emulated."""
    if figures.get("gpu"):
        return str(figures["gpu"])
    cpu = figures["machine"]["processor"].split("(")[0].strip()
    return f"{cpu}, {'bf16 units' if figures['bf16_hardware'] else 'emulated bf16'}"


def table(files: list[dict[str, Any]]) -> str:
    """The committed figures of every file as the docs' Markdown table."""
    lines = [
        "| analysis | model | images | figure (goal) | measured on | bf16 agrees |",
        "|---|---|---|---|---|---|",
    ]
    for figures, r in ((f, r) for f in files for r in f["rows"]):
        if r["analysis"] in registry.names():
            what = (
                f"Spearman median {r['spearman_median']:.4f} (10th pct {r['spearman_p10']:.4f}; "
                f"goal 0.99), top-10% IoU median {r['top10_iou_median']:.3f} (10th pct "
                f"{r['top10_iou_p10']:.3f}; goal 0.9)"
            )
        elif r["analysis"] == "faithfulness":
            what = (
                f"mean AUC gap: deletion {r['deletion_auc_gap']:.4f}, insertion "
                f"{r['insertion_auc_gap']:.4f} (goal 0.01)"
            )
            if "table_auc_gap" in r:
                what += f"; whole table in bf16 (maps too): {r['table_auc_gap']:.4f}"
        elif r["analysis"] == "dissect":
            what = (
                f"{r['threshold_within_1pct']:.1%} of {r['units']} thresholds within 1% (max "
                f"{r['threshold_rel_max']:.2%}; goal all), top-8 images the same "
                f"{r['top8_same_mean']:.1%} (min {r['top8_same_min']:.0%}; goal 95%)"
            )
        elif r["analysis"] == "fewest_units":
            what = (
                f"{r['flip_in_fp32']} of {r['found']} sets flip in fp32 (goal all); searched "
                f"again in fp32 {r['searched_again_in_fp32']}; larger than fp32's "
                f"{r['larger_in_bf16']}"
            )
        else:
            what = (
                f"{r['reach_1_5x_bf16']:.0%} of live units reach 1.5x the test maximum "
                f"(fp32 {r['reach_1_5x_fp32']:.0%}; goal 90%), {r['steps']} steps"
            )
        size = f" at {r['size']} px" if "size" in r else ""
        agrees = "yes" if r["agrees"] else "**no**"
        lines.append(
            f"| {r['analysis']} | {r['model']}{size} | {r['images']} | {what} "
            f"| {measured_on(figures)} | {agrees} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="+", choices=PARTS, default=list(PARTS))
    ap.add_argument("--models", nargs="+", choices=("fashion-cnn", "resnet50"),
                    default=["fashion-cnn", "resnet50"])  # fmt: skip
    ap.add_argument("--methods", nargs="+", choices=registry.names(), help="maps: these [all]")
    ap.add_argument("--images", type=int, default=100)
    ap.add_argument("--slow-images", type=int, default=4,
                    help="resnet50 images of the SLOW methods [4]")  # fmt: skip
    ap.add_argument("--size", type=int, default=112, help="resnet50's image side [112]")
    ap.add_argument("--visualize-steps", type=int, default=256)
    ap.add_argument("--json", type=Path, default=OUT)
    ap.add_argument("--device", default="cpu", help="cpu or cuda[:N]: where the models run; "
                    "fp32 there is strict fp32 (no TF32) [cpu]")  # fmt: skip
    ap.add_argument("--table", action="store_true", help="print the committed figures "
                    "(every file of COMMITTED) as the docs' table, and run nothing")  # fmt: skip
    args = ap.parse_args()
    if args.table:
        print(table([json.loads(path.read_text()) for path in COMMITTED if path.is_file()]))
        return
    torch.set_num_threads(max(1, torch.get_num_threads()))
    global DEVICE
    DEVICE = resolve_device(args.device)
    if DEVICE.type == "cuda":  # the baseline is fp32 itself, not TF32 convolutions
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    old = json.loads(args.json.read_text()) if args.json.exists() else {"rows": []}
    rows = {(r["model"], r["analysis"]): r for r in old["rows"]}
    for name in args.models:
        s = Subject(name, args.images, args.size)
        for part in args.only:
            for row in globals()[f"part_{part}"](s, args):
                row = {"model": name, **row}
                if name == "resnet50":
                    row["size"] = args.size
                rows[(name, row["analysis"])] = row
                print(json.dumps(row), flush=True)
                atomic_write_json(
                    args.json,
                    {
                        "machine": machine_info(),
                        "device": str(DEVICE),
                        "gpu": torch.cuda.get_device_name(DEVICE)
                        if DEVICE.type == "cuda"
                        else None,
                        "bf16_hardware": native("bf16", DEVICE),
                        "rows": list(rows.values()),
                    },
                )


if __name__ == "__main__":
    main()
