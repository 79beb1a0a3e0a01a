"""Latency of the explorer's HTTP API: a real server, a real client, one request at a time.

Starts ``convlens serve``'s app under uvicorn on a free loopback port, then for
``--images`` FashionMNIST test images (a new image for every request, so per-image
caches do not help) times the requests the page makes: top-5, one CAM (Grad-CAM of the
second class), the unit maps of the default layer, one ablation (three units), and the
fewest units that flip the top-1. Prints the median and 95th percentile per request.

    uv run python benchmarks/serve_latency.py
    uv run python benchmarks/serve_latency.py --json benchmarks/results/serve_latency.json
"""

from __future__ import annotations

import argparse
import socket
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from convlens import models
from convlens.core.device import machine_info
from convlens.core.fileio import atomic_write_json
from convlens.serve.app import create_app
from convlens.serve.explorer import Explorer


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
    args = parser.parse_args()
    explorer = Explorer(models.load("fashion-cnn"), data="test")
    url, server = start(explorer)
    times: dict[str, list[float]] = {k: [] for k in ("top-5", "CAM", "unit maps", "ablation",
                                                     "fewest units")}  # fmt: skip
    with httpx.Client(base_url=url, timeout=60) as c:
        c.get("/api/predict", params={"image": "test:9999"})  # warm-up
        for i in range(args.images):
            image = f"test:{i}"
            times["top-5"].append(timed(lambda: c.get("/api/predict", params={"image": image})))  # noqa: B023
            second = c.get("/api/predict", params={"image": image}).json()["top5"][1]["index"]
            cam = {"image": image, "class": second, "method": "gradcam"}
            times["CAM"].append(timed(lambda: c.get("/api/cam.png", params=cam)))  # noqa: B023
            units = {"image": image, "layer": "features", "top": 12}
            times["unit maps"].append(timed(lambda: c.get("/api/units", params=units)))  # noqa: B023
            body = {"image": image, "units": [3, 17, 40]}
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
    info = machine_info()
    print(f"machine: {info['processor']}, {info['threads']} threads, torch {info['torch']}\n")
    print("| request | n | median ms | 95th percentile ms |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['request']} | {r['n']} | {r['median_ms']:.1f} | {r['p95_ms']:.1f} |")
    if args.json:
        atomic_write_json(args.json, {"machine": info, "rows": rows})
        print(f"\nwrote {args.json}")
    explorer.close()


if __name__ == "__main__":
    main()
