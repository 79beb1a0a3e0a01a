"""Speed of every CAM method next to torchcam's and pytorch-grad-cam's, in one run.

For each model and method: images/s of our maps for the top-``--top`` classes of a
batch, the same for each reference library that has the method (torchcam computes one
class per call, pytorch-grad-cam one forward and backward pass per class), our speed
as a ratio to the fastest reference, and the largest difference of the normalised
maps. The methods of a pass per channel (Score-CAM, Ablation-CAM, IS-CAM, SS-CAM) run
on a smaller batch; IS-CAM and SS-CAM with 2 samples on both sides (their time grows
with the samples on both sides alike), SS-CAM's and Smooth Grad-CAM++'s noise drawn
from seed 0 for every class (Smooth Grad-CAM++ with its default 4 samples).

    uv run python benchmarks/cam_family_speed.py          # about 25 minutes on 2 cores
    uv run python benchmarks/cam_family_speed.py --json benchmarks/results/cam_family_speed.json
    uv run python benchmarks/cam_family_speed.py --methods gradcam gradcamelementwise \
        eigengradcam ablationcam iscam sscam --json benchmarks/results/cam_family_later.json
    uv run python benchmarks/cam_family_speed.py --top 3 --repeats 2 --methods kpcacam \
        shapleycam finercam refinecam --json benchmarks/results/cam_family_last.json

Models: resnet18 in the Places365 format (365 classes, random weights, seed 0) at
224x224, and the shipped FashionMNIST model on test images.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from convlens import models
from convlens.core.device import machine_info
from convlens.core.fileio import atomic_write_json
from convlens.data import fashion_mnist as data
from convlens.interpret.maps import registry
from convlens.interpret.maps.base import normalize_maps
from convlens.interpret.maps.refine_cam import finer_layers
from convlens.models import places365
from timing import best_time

warnings.filterwarnings("ignore")


def torchcam_maps(name: str, model: nn.Module, layer: str, x: torch.Tensor,
                  classes: torch.Tensor) -> torch.Tensor:  # fmt: skip
    from torchcam import methods

    cls = {"gradcam": methods.GradCAM, "gradcampp": methods.GradCAMpp,
           "xgradcam": methods.XGradCAM, "layercam": methods.LayerCAM,
           "scorecam": methods.ScoreCAM, "iscam": methods.ISCAM,
           "sscam": methods.SSCAM, "smoothgradcampp": methods.SmoothGradCAMpp,
           "finercam": methods.FinerCAM, "refinecam": methods.RefineCAM}[name]  # fmt: skip
    kw = {"num_samples": SAMPLES} if name in ("iscam", "sscam") else {}
    target: str | list[str] = list(finer_layers(model, x, layer)) if name == "refinecam" else layer
    out = []
    with cls(model, target_layer=target, **kw) as extractor:
        for t in range(classes.shape[1]):
            torch.manual_seed(0)  # SS-CAM's and Smooth Grad-CAM++'s noise: our seed 0's draw
            scores = model(x)
            out.append(extractor(classes[:, t].tolist(), scores, normalized=False)[0])
    return torch.stack(out, 1).detach()


def grad_cam_maps(name: str, model: nn.Module, layer: str, x: torch.Tensor,
                  classes: torch.Tensor) -> torch.Tensor:  # fmt: skip
    import pytorch_grad_cam as pgc
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    cls = {"gradcam": pgc.GradCAM, "gradcampp": pgc.GradCAMPlusPlus, "xgradcam": pgc.XGradCAM,
           "layercam": pgc.LayerCAM, "hirescam": pgc.HiResCAM, "scorecam": pgc.ScoreCAM,
           "eigencam": pgc.EigenCAM, "ablationcam": pgc.AblationCAM,
           "eigengradcam": pgc.EigenGradCAM,
           "gradcamelementwise": pgc.GradCAMElementWise, "kpcacam": pgc.KPCA_CAM,
           "shapleycam": pgc.ShapleyCAM}.get(name)  # fmt: skip
    modules = dict(model.named_modules())
    if name == "finercam":
        return pgc_finer_cam(model, modules[layer], x, classes)
    if name == "refinecam":
        layers = [modules[n] for n in finer_layers(model, x, layer)]
        refine = pgc.RefineCAM(model, layers, base_method=pgc.GradCAMPlusPlus)
        return torch.stack([
            torch.from_numpy(refine(x, [ClassifierOutputTarget(int(c)) for c in classes[:, t]]))
            for t in range(classes.shape[1])
        ], 1)  # fmt: skip
    assert cls is not None, name
    out = []
    with cls(model=model, target_layers=[modules[layer]]) as extractor:
        for t in range(classes.shape[1]):
            targets = [ClassifierOutputTarget(int(c)) for c in classes[:, t]]
            out.append(torch.from_numpy(extractor(input_tensor=x, targets=targets)))
    return torch.stack(out, 1)


def pgc_finer_cam(model: nn.Module, module: nn.Module, x: torch.Tensor,
                  classes: torch.Tensor) -> torch.Tensor:  # fmt: skip
    """pytorch-grad-cam's Finer-CAM for a batch, as a user of it does: its weighted
    target of each image's class and its three classes nearest in logit, then one call
    per class rank (its ``target_idx`` serves one class for the whole batch)."""
    from pytorch_grad_cam import FinerCAM
    from pytorch_grad_cam.utils.model_targets import FinerWeightedTarget

    extractor = FinerCAM(model, [module])
    out = []
    for t in range(classes.shape[1]):
        with torch.no_grad():
            logits = model(x)
        target = logits.gather(1, classes[:, t : t + 1])
        nearest = (logits - target).abs().argsort(1)[:, 1:4]
        targets = [FinerWeightedTarget(int(c), nearest[i].tolist(), 1.0)
                   for i, c in enumerate(classes[:, t])]  # fmt: skip
        out.append(torch.from_numpy(extractor(x, targets=targets)))
    return torch.stack(out, 1)


REFERENCES = {"torchcam": torchcam_maps, "pytorch-grad-cam": grad_cam_maps}
# Where the two references disagree, our option that follows each (see README).
VARIANTS: dict[tuple[str, str], dict[str, Any]] = {
    ("gradcampp", "torchcam"): {"reference": "torchcam"},
    ("scorecam", "pytorch-grad-cam"): {"reference": "pytorch-grad-cam"},
    ("finercam", "torchcam"): {"reference": "torchcam"},
    ("refinecam", "torchcam"): {"reference": "torchcam"},
}
HAS = {
    "torchcam": (
        "gradcam",
        "gradcampp",
        "xgradcam",
        "layercam",
        "scorecam",
        "iscam",
        "sscam",
        "smoothgradcampp",
        "finercam",
        "refinecam",
    ),
    "pytorch-grad-cam": (
        "gradcam",
        "gradcampp",
        "xgradcam",
        "layercam",
        "hirescam",
        "scorecam",
        "eigencam",
        "gradcamelementwise",
        "eigengradcam",
        "ablationcam",
        "kpcacam",
        "shapleycam",
        "finercam",
        "refinecam",
    ),
}
# the methods of one pass per channel (per sample): a smaller batch, once at 224 px
PER_CHANNEL = ("scorecam", "ablationcam", "iscam", "sscam")
SAMPLES = 2  # IS-CAM's and SS-CAM's samples on both sides: the time per sample compares


def bench(name: str, model: nn.Module, x: torch.Tensor, layer: str, top: int,
          repeats: int, score_batch: int, methods: list[str]) -> list[dict[str, Any]]:  # fmt: skip
    model.eval()
    rows = []
    for method in methods:
        heavy = method in PER_CHANNEL
        xb = x[:score_batch] if heavy else x
        with torch.no_grad():
            classes = model(xb).topk(top, 1).indices
        # Score-CAM at 224 px takes minutes a run: time it once there, like the rest elsewhere
        reps = 1 if heavy and xb.shape[-1] > 64 else repeats
        kw = {"samples": SAMPLES} if method in ("iscam", "sscam") else {}
        ours = registry.method_class(method)(model, layer, **kw)
        row: dict[str, Any] = {"model": name, "method": method, "batch": xb.shape[0], "top": top}
        row["ours_img_s"] = xb.shape[0] / best_time(lambda: ours(xb, classes=classes), reps)  # noqa: B023
        for lib, fn in REFERENCES.items():
            if method not in HAS[lib]:
                continue
            t = best_time(lambda: fn(method, model, layer, xb, classes), reps)  # noqa: B023
            row[f"{lib}_img_s"] = xb.shape[0] / t
            theirs = fn(method, model, layer, xb, classes)
            # compare with the variant that follows this library where they differ
            variant = {**kw, **VARIANTS.get((method, lib), {})}
            mine = registry.method_class(method)(model, layer, **variant)(xb, classes=classes)
            if lib == "torchcam":
                diff = (mine.normalized - normalize_maps(theirs)).abs().max()
            else:
                diff = (normalize_maps(mine.upsampled) - theirs).abs().max()
            row[f"{lib}_max_diff"] = float(diff)
        fastest = max(v for k, v in row.items() if k.endswith("_img_s") and k != "ours_img_s")
        row["ratio_to_fastest"] = row["ours_img_s"] / fastest
        print(row, flush=True)
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--top", type=int, default=5)
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--methods", nargs="+", help="these methods only [every CAM method with a reference]"
    )
    args = parser.parse_args()
    methods = args.methods or [m for m in registry.names("cam") if m != "cam"]
    torch.manual_seed(0)
    resnet = places365.build("resnet18").eval()
    rows = bench("resnet18", resnet, torch.randn(8, 3, 224, 224), "layer4", args.top,
                 args.repeats, score_batch=1, methods=methods)  # fmt: skip
    fashion = models.load("fashion-cnn").model
    xf = data.to_float(data.load_fashion_mnist("test").images[:256])
    rows += bench("fashion-cnn", fashion, xf, "features", args.top, args.repeats, score_batch=16,
                  methods=methods)  # fmt: skip
    info = {**machine_info(), "torchcam": importlib.metadata.version("torchcam"),
            "pytorch_grad_cam": importlib.metadata.version("grad-cam")}  # fmt: skip
    print(f"\nmachine: {info['processor']}, {info['threads']} threads, torch {info['torch']}")
    print(f"top-{args.top} maps; img/s (ours, torchcam, pytorch-grad-cam), ratio to the fastest")
    print("reference, largest difference of the normalised maps\n")
    print(
        "| model | method | batch | ours img/s | torchcam | pytorch-grad-cam | ratio | max diff |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        tc, pg = r.get("torchcam_img_s"), r.get("pytorch-grad-cam_img_s")
        diff = max(v for k, v in r.items() if k.endswith("_max_diff"))
        print(
            f"| {r['model']} | {r['method']} | {r['batch']} | {r['ours_img_s']:.2f} | "
            f"{f'{tc:.2f}' if tc else '-'} | {f'{pg:.2f}' if pg else '-'} | "
            f"{r['ratio_to_fastest']:.1f}x | {diff:.1e} |"
        )
    if args.json:
        atomic_write_json(args.json, {"machine": info, "top": args.top, "rows": rows})
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
