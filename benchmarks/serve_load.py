"""The explorer under load: many clients, a long search beside short requests, memory.

For each model (fashion-cnn on the FashionMNIST test set; random-weight
``torchvision:resnet18`` at 224 px on a folder of generated photos) this starts a real
``convlens serve`` process and drives it over HTTP the way the page does. A *click*
is a new image chosen at random: its top-5, the map of its top class, the 12 most
active units of the default layer, and an ablation of three of them.

1. **Clients.** 1, 4, 16 and 64 clients click at once, without pause; the median and
   95th percentile of each request kind, and at 16 clients the 95th percentile over the
   single client's (goal: at most 10x for top-5, map and ablation).
2. **A long search beside a short request.** One client asks for top-5s alone, then
   while a greedy fewest-units search on an early layer runs as a job (another tab);
   the 95th percentile added (goal: at most 300 ms).
3. **Memory.** 10,000 requests of the click mix from 16 clients with 1,000 uploads
   (new images, 64-800 px, PNG and JPEG) among them; the server's resident memory
   after the first 100 requests and at the end (goal: at most 500 MB more).

One run, client and server on the same machine (the clients take CPU too).

    uv run python benchmarks/serve_load.py
    uv run python benchmarks/serve_load.py --json benchmarks/results/serve_load.json
"""

from __future__ import annotations

import argparse
import io
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

from convlens.core.device import machine_info
from convlens.core.fileio import atomic_write_json

KINDS = ("top-5", "map", "units", "ablation")
GOAL_RATIO, GOAL_ADDED_MS, GOAL_RSS_MB = 10.0, 300.0, 500.0


def photo(rng: np.random.Generator, side: tuple[int, int], fmt: str) -> bytes:
    """A synthetic photo: smooth colour blobs and noise, so it compresses like one."""
    w, h = side
    small = rng.integers(0, 256, (max(2, h // 32), max(2, w // 32), 3), dtype=np.uint8)
    img = Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC)
    a = np.asarray(img).astype(np.int16) + rng.integers(-20, 21, (h, w, 3))
    buf = io.BytesIO()
    Image.fromarray(a.clip(0, 255).astype(np.uint8)).save(buf, format=fmt)
    return buf.getvalue()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def server(args: list[str]) -> Iterator[tuple[str, int]]:
    """A ``convlens serve`` process: its URL and pid."""
    port = free_port()
    exe = Path(sys.executable).parent / "convlens"
    proc = subprocess.Popen(
        [str(exe), "serve", *args, "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                if httpx.get(url + "/api/info", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the server did not start: {proc.stderr.read()[-2000:]}")  # type: ignore[union-attr]
            time.sleep(0.2)
        yield url, proc.pid
    finally:
        proc.terminate()
        proc.wait(30)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


class Page:
    """One client doing what the page does; times every request by kind."""

    def __init__(self, url: str, images: list[str], layer: str, channels: int, seed: int) -> None:
        self.c = httpx.Client(base_url=url, timeout=600)
        self.images, self.layer, self.channels = images, layer, channels
        self.rng = random.Random(seed)
        self.times: dict[str, list[float]] = {k: [] for k in KINDS}

    def timed(self, kind: str, fn: Callable[[], httpx.Response]) -> httpx.Response:
        t = time.perf_counter()
        r = fn()
        self.times[kind].append((time.perf_counter() - t) * 1000)
        r.raise_for_status()
        return r

    def top5(self, image: str) -> list[dict[str, Any]]:
        r = self.timed("top-5", lambda: self.c.get("/api/predict", params={"image": image}))
        top5: list[dict[str, Any]] = r.json()["top5"]
        return top5

    def click(self, image: str | None = None) -> int:
        """One click: four requests."""
        image = image or self.rng.choice(self.images)
        top = self.top5(image)[0]["index"]
        cam = {"image": image, "class": top, "method": "gradcam"}
        self.timed("map", lambda: self.c.get("/api/cam.png", params=cam))
        units = {"image": image, "layer": self.layer, "top": 12}
        shown = self.timed("units", lambda: self.c.get("/api/units", params=units)).json()
        off = [u["unit"] for u in self.rng.sample(shown["units"], 3)]
        body = {"image": image, "layer": self.layer, "units": off}
        self.timed("ablation", lambda: self.c.post("/api/ablate", json=body))
        return 4

    def upload(self, k: int) -> int:
        side = (self.rng.randint(64, 800), self.rng.randint(64, 800))
        side = (side[0], min(side[1], 10 * side[0]))
        fmt = "PNG" if k % 2 else "JPEG"
        data = photo(np.random.default_rng(10_000 + k), side, fmt)
        files = {"file": (f"upload{k}.{fmt.lower()}", data, f"image/{fmt.lower()}")}
        r = self.c.post("/api/upload", files=files)
        r.raise_for_status()
        return 1 + self.click(r.json()["id"])


def percentile(ms: list[float], q: float) -> float:
    return float(np.percentile(ms, q)) if ms else float("nan")


def summary(ms: list[float]) -> dict[str, float]:
    return {"n": len(ms), "median_ms": round(percentile(ms, 50), 1),
            "p95_ms": round(percentile(ms, 95), 1)}  # fmt: skip


def run_clients(url: str, spec: dict[str, Any], clients: int, clicks: int) -> dict[str, Any]:
    """``clients`` pages clicking at once, ``clicks`` clicks in all."""
    pages = [Page(url, spec["images"], spec["layer"], spec["channels"], s) for s in range(clients)]
    per = [clicks // clients + (k < clicks % clients) for k in range(clients)]
    threads = [
        threading.Thread(target=lambda p=p, n=n: [p.click() for _ in range(n)])
        for p, n in zip(pages, per, strict=True)
    ]
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    seconds = time.perf_counter() - t
    out: dict[str, Any] = {"clients": clients, "clicks": clicks, "seconds": round(seconds, 2)}
    for kind in KINDS:
        ms = [x for p in pages for x in p.times[kind]]
        out[kind] = summary(ms)
    for p in pages:
        p.c.close()
    return out


def search_beside(url: str, spec: dict[str, Any], n: int = 40) -> dict[str, Any]:
    """Top-5 latency alone, then while a greedy search runs as a job in another tab."""
    page = Page(url, spec["images"], spec["layer"], spec["channels"], 99)
    for image in page.rng.sample(spec["images"], n):
        page.top5(image)
    alone = page.times["top-5"]
    page.times["top-5"] = []
    tab = httpx.Client(base_url=url, timeout=600)
    body = {"image": spec["images"][1], "layer": spec["search_layer"]}
    job = tab.post("/api/jobs/fewest", json=body).json()
    status = job
    while status["status"] in ("queued", "running"):
        page.top5(page.rng.choice(spec["images"]))
        status = tab.get(f"/api/jobs/{job['id']}").json()  # the other tab polls
    during = page.times["top-5"]
    result = status.get("result", {})
    tab.close()
    page.c.close()
    return {
        "search_layer": spec["search_layer"],
        "search_seconds": result.get("seconds"),
        "search_stopped": result.get("stopped"),
        "top5_alone": summary(alone),
        "top5_during": summary(during),
        "p95_added_ms": round(percentile(during, 95) - percentile(alone, 95), 1),
    }


def memory(url: str, pid: int, spec: dict[str, Any], requests: int, uploads: int) -> dict[str, Any]:
    """RSS after the first 100 requests, then after ``requests`` with ``uploads`` among them."""
    warm = Page(url, spec["images"], spec["layer"], spec["channels"], 7)
    made = 0
    while made < 100:
        made += warm.click()
    base = rss_mb(pid)
    clients = 16
    budget = [requests - made]
    upload_every = max(1, (requests - made) // (uploads * 5))  # an upload is 5 requests
    counter = {"uploads": 0, "clicks": 0}
    lock = threading.Lock()
    peak = [base]

    def client(seed: int) -> None:
        p = Page(url, spec["images"], spec["layer"], spec["channels"], 1000 + seed)
        while True:
            with lock:
                if budget[0] <= 0:
                    break
                k = counter["clicks"]
                counter["clicks"] += 1
                upload = counter["uploads"] < uploads and k % upload_every == 0
                n = counter["uploads"]
                if upload:
                    counter["uploads"] += 1
                budget[0] -= 5 if upload else 4
            p.upload(n) if upload else p.click()
        p.c.close()

    def sample() -> None:
        while budget[0] > 0:
            peak[0] = max(peak[0], rss_mb(pid))
            time.sleep(0.5)

    threads = [threading.Thread(target=client, args=(s,)) for s in range(clients)]
    sampler = threading.Thread(target=sample)
    t = time.perf_counter()
    sampler.start()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    sampler.join()
    end = rss_mb(pid)
    return {
        "requests": requests,
        "uploads": counter["uploads"],
        "seconds": round(time.perf_counter() - t, 1),
        "rss_after_100_mb": round(base, 1),
        "rss_peak_mb": round(max(peak[0], end), 1),
        "rss_end_mb": round(end, 1),
        "rss_growth_mb": round(end - base, 1),
        "rss_peak_growth_mb": round(max(peak[0], end) - base, 1),
    }


def models(folder: Path) -> list[dict[str, Any]]:
    rng = np.random.default_rng(0)
    for k in range(300):
        (folder / f"photo{k:03d}.jpg").write_bytes(photo(rng, (320, 240), "JPEG"))
    return [
        {"name": "fashion-cnn", "args": ["fashion-cnn", "--data", "test"], "layer": "features",
         "search_layer": "features.0.0.conv", "channels": 1,
         "images": [f"test:{k}" for k in range(10_000)]},
        {"name": "torchvision:resnet18 (random weights, 224 px)",
         "args": ["torchvision:resnet18", "--weights", "none", "--images", str(folder)],
         "layer": "layer4", "search_layer": "layer1.0.conv1", "channels": 3,
         "images": [f"file:{k}" for k in range(300)]},
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--clicks", type=int, default=160, help="clicks per client level")
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--uploads", type=int, default=1_000)
    parser.add_argument("--only", help="run only the model whose name starts with this")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    info = machine_info()
    cores = os.cpu_count()
    print(f"machine: {info['processor']}, {cores} cores, torch {info['torch']}", flush=True)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for spec in models(Path(tmp)):
            if args.only and not spec["name"].startswith(args.only):
                continue
            with server(spec["args"]) as (url, pid):
                row: dict[str, Any] = {"model": spec["name"], "levels": []}
                for n in args.clients:
                    level = run_clients(url, spec, n, max(args.clicks, 2 * n))
                    row["levels"].append(level)
                    print(spec["name"], level, flush=True)
                single = next((r for r in row["levels"] if r["clients"] == 1), None)
                at16 = next((r for r in row["levels"] if r["clients"] == 16), None)
                if single and at16:
                    row["p95_ratio_at_16"] = {
                        k: round(at16[k]["p95_ms"] / single[k]["p95_ms"], 1) for k in KINDS
                    }
                    print("p95 at 16 clients / 1 client:", row["p95_ratio_at_16"], flush=True)
                row["search_beside"] = search_beside(url, spec)
                print("search beside:", row["search_beside"], flush=True)
                row["memory"] = memory(url, pid, spec, args.requests, args.uploads)
                print("memory:", row["memory"], flush=True)
                results.append(row)
    goals = {"p95_ratio_at_16": GOAL_RATIO, "p95_added_ms": GOAL_ADDED_MS,
             "rss_growth_mb": GOAL_RSS_MB}  # fmt: skip
    report(results)
    if args.json:
        atomic_write_json(args.json, {"machine": info, "cores": os.cpu_count(), "goals": goals,
                                      "args": vars(args) | {"json": str(args.json)},
                                      "results": results})  # fmt: skip
        print(f"\nwrote {args.json}")


def report(results: list[dict[str, Any]]) -> None:
    for row in results:
        print(f"\n## {row['model']}\n")
        print("| clients | " + " | ".join(f"{k} median / p95 ms" for k in KINDS) + " |")
        print("|---" * (len(KINDS) + 1) + "|")
        for lv in row["levels"]:
            cells = [f"{lv[k]['median_ms']:.0f} / {lv[k]['p95_ms']:.0f}" for k in KINDS]
            print(f"| {lv['clients']} | " + " | ".join(cells) + " |")
        if "p95_ratio_at_16" in row:
            ratio = row["p95_ratio_at_16"]
            print(f"\np95 at 16 clients over 1 client: {ratio} (goal <= {GOAL_RATIO})")
        s = row["search_beside"]
        print(f"top-5 p95 added during a search: {s['p95_added_ms']} ms (goal <= {GOAL_ADDED_MS})")
        m = row["memory"]
        print(f"RSS growth after {m['requests']} requests and {m['uploads']} uploads: "
              f"{m['rss_growth_mb']} MB, peak {m['rss_peak_growth_mb']} MB "
              f"(goal <= {GOAL_RSS_MB})")  # fmt: skip


if __name__ == "__main__":
    main()
