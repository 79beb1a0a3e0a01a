"""The faithfulness table with ROAD and the sanity checks on 1,000 FashionMNIST test images
(issue 42: at most 20 minutes on 2 cores): the shipped fashion-cnn, every CAM method of
the CLI's default set, every pixel attribution, and the two reference maps, as

    convlens faithfulness fashion-cnn --limit 1000 --pixel --road --sanity

runs them (``--shards N --ray local:2``: in shards on a local Ray cluster of both
cores). Writes the table and the seconds of the whole command (model loading, data,
every column, the figure) with the machine it ran on.

    uv run python benchmarks/sanity_table.py [--limit 1000] \
        [--json benchmarks/results/sanity_table.json]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from convlens.cli import main
from convlens.core.device import machine_info
from convlens.core.fileio import atomic_write_json


def run(limit: int, extra: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "table"
        args = ["faithfulness", "fashion-cnn", "--limit", str(limit), "--pixel", "--road",
                "--sanity", *extra, "--out", str(out)]  # fmt: skip
        start = time.perf_counter()
        if main(args) != 0:
            raise SystemExit("the faithfulness command failed")
        seconds = time.perf_counter() - start
        table = (out / "faithfulness.md").read_text()
    return {"command": "convlens " + " ".join(args[:-2]), "images": limit,
            "seconds": round(seconds, 1), "table": table, "machine": machine_info()}  # fmt: skip


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=1000)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--shards", type=int, default=1, help="as the command's --shards")
    parser.add_argument("--ray", help="as the command's --ray (local:2: both cores)")
    args = parser.parse_args()
    extra = ["--shards", str(args.shards)] + (["--ray", args.ray] if args.ray else [])
    result = run(args.limit, extra)
    print(result["table"])
    print(f"{result['images']} images in {result['seconds']} s on {result['machine']['processor']}")
    if args.json:
        atomic_write_json(args.json, result)


if __name__ == "__main__":
    cli()
