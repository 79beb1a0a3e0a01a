"""Latency of the explorer's HTTP API: a real server, a real client, one request at a time.

Starts ``convlens serve``'s app under uvicorn on a free loopback port, then for
``--images`` FashionMNIST test images (a new image for every request, so per-image
caches do not help) times the requests the page makes: top-5, one CAM (Grad-CAM of the
second class), the unit maps of the default layer, one ablation (three units), and the
fewest units that flip the top-1. Prints the median and 95th percentile per request.

    uv run python benchmarks/serve_latency.py
    uv run python benchmarks/serve_latency.py --json benchmarks/results/serve_latency.json
    uv run python benchmarks/serve_latency.py --model torchvision:resnet50 --weights none \
        --images 20 --precision auto
"""

from __future__ import annotations

import argparse
import socket
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import torch
import uvicorn
from PIL import Image

from convlens import models
from convlens.core.fileio import atomic_write_json
from convlens.serve.app import create_app
from convlens.serve.explorer import Explorer
from timing import add_device_args, placed, run_record


def start(explorer: Explorer) -> tuple[str, uvicorn.Server]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = uvicorn.Config(create_app(explorer), host="127.0.0.1", port=port, log_level="error")
    server = uvicorn.Server(config)
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return f"http://127.0.0.1:{port}", server


def timed(fn: Callable[[], httpx.Response]) -> float:
    t = time.perf_counter()
    r = fn()
    elapsed = time.perf_counter() - t
    r.raise_for_status()
    return elapsed * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--model", default="fashion-cnn",
                        help="fashion-cnn (its test images), or any model name of convlens, "
                        "e.g. torchvision:resnet50 (smooth random images at --size)")  # fmt: skip
    parser.add_argument("--weights", help="as the commands take it ('none': random)")
    parser.add_argument("--size", type=int, default=224)
    add_device_args(parser)
    args = parser.parse_args()
    device, chosen_precision = placed(args)
    loaded = models.load(args.model, weights=args.weights)
    loaded.model.to(device)
    with tempfile.TemporaryDirectory() as folder, chosen_precision:
        if args.model == "fashion-cnn":
            explorer, ids = Explorer(loaded, data="test"), [f"test:{i}" for i in range(10_000)]
        else:
            write_images(Path(folder), args.images + 1, args.size)
            explorer = Explorer(loaded, images_dir=Path(folder))
            ids = [f"file:{i}" for i in range(args.images + 1)]
        rows = measure(explorer, ids, args.images)
        explorer.close()
    info = run_record(args, device)
    print(f"machine: {info['processor']}, {info['threads']} threads, torch {info['torch']}")
    print(f"{args.model} on {device}, {args.precision}\n")
    print("| request | n | median ms | 95th percentile ms |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['request']} | {r['n']} | {r['median_ms']:.1f} | {r['p95_ms']:.1f} |")
    if args.json:
        atomic_write_json(args.json, {"machine": info, "model": args.model, "rows": rows})
        print(f"\nwrote {args.json}")


def write_images(folder: Path, n: int, size: int) -> None:
    """``n`` smooth random RGB images (noise at 1/8 of ``size``, upsampled)."""
    g = torch.Generator().manual_seed(0)
    small = torch.rand(n, 3, size // 8, size // 8, generator=g)
    x = torch.nn.functional.interpolate(small, size=(size, size), mode="bilinear")
    for i, image in enumerate(x):
        array = (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        Image.fromarray(array).save(folder / f"{i:04d}.png")


def measure(explorer: Explorer, ids: list[str], n: int) -> list[dict[str, Any]]:
    url, server = start(explorer)
    layer = explorer.default_layer
    times: dict[str, list[float]] = {k: [] for k in ("top-5", "CAM", "unit maps", "ablation",
                                                     "fewest units")}  # fmt: skip
    with httpx.Client(base_url=url, timeout=600) as c:
        c.get("/api/predict", params={"image": ids[-1]})  # warm-up
        for image in ids[:n]:
            times["top-5"].append(timed(lambda: c.get("/api/predict", params={"image": image})))  # noqa: B023
            second = c.get("/api/predict", params={"image": image}).json()["top5"][1]["index"]
            cam = {"image": image, "class": second, "method": "gradcam"}
            times["CAM"].append(timed(lambda: c.get("/api/cam.png", params=cam)))  # noqa: B023
            units = {"image": image, "layer": layer, "top": 12}
            times["unit maps"].append(timed(lambda: c.get("/api/units", params=units)))  # noqa: B023
            body = {"image": image, "layer": layer, "units": [3, 17, 40]}
            times["ablation"].append(timed(lambda: c.post("/api/ablate", json=body)))  # noqa: B023
            few = {"image": image}
            times["fewest units"].append(timed(lambda: c.post("/api/fewest", json=few)))  # noqa: B023
    server.should_exit = True
    rows: list[dict[str, Any]] = []
    for name, ms in times.items():
        ms.sort()
        p95 = ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))]
        rows.append({"request": name, "n": len(ms), "median_ms": statistics.median(ms),
                     "p95_ms": p95})  # fmt: skip
    return rows


if __name__ == "__main__":
    main()
