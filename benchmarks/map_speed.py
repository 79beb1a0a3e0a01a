"""Speed of convlens's own maps, every method of both families, through the public API
only (``convlens.class_maps``), so that two versions of the code can be timed against
each other: run it with one version's ``src`` first on ``PYTHONPATH``, then the other's,
taking turns.

    uv run python benchmarks/map_speed.py --json /tmp/after.json
    PYTHONPATH=/tmp/before/src uv run python benchmarks/map_speed.py --json /tmp/before.json

Models: the shipped fashion-cnn on 32 test images (top-3 classes), and a random-weight
resnet18 (365 classes) on 2 images at 224 px (top-3). Score-CAM and the long pixel
methods on fewer images. Each figure is the best of ``--repeats`` calls.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torchvision

import convlens
from convlens.core.device import machine_info
from convlens.data import fashion_mnist as fm

CAM = ("cam", "gradcam", "gradcampp", "xgradcam", "layercam", "hirescam", "scorecam", "eigencam")
PIXEL = ("saliency", "inputxgradient", "integratedgradients", "smoothgrad", "occlusion",
         "guidedbackprop", "guidedgradcam")  # fmt: skip
HEAVY = {"scorecam", "integratedgradients", "smoothgrad", "occlusion"}


def best_of(repeats: int, fn: object) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.manual_seed(0)
    resnet = torchvision.models.resnet18(num_classes=365).eval()
    fashion = convlens.load_model("fashion-cnn").model
    test = fm.load_fashion_mnist("test")
    noise = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    cases = {
        "fashion-cnn": (fashion, fm.to_float(test.images[:32]), 8),
        "resnet18": (resnet, noise, 1),
    }
    rows = {}
    for model_name, (model, x, heavy_n) in cases.items():
        for method in (*CAM, *PIXEL):
            xs = x[:heavy_n] if method in HEAVY else x
            convlens.class_maps(model, xs[:1], top=1, method=method)  # warm-up
            s = best_of(args.repeats, lambda: convlens.class_maps(model, xs, top=3, method=method))  # noqa: B023
            rows[f"{model_name}/{method}"] = {"images": len(xs), "seconds": s,
                                              "images_per_s": len(xs) / s}  # fmt: skip
            print(f"{model_name:12s} {method:20s} {len(xs) / s:9.1f} images/s", flush=True)
    out = {"code": str(Path(convlens.__file__).parent), "machine": machine_info(), "rows": rows}
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
