"""How long the ``convlens`` command takes before it does its work.

Times, in fresh processes, the median wall time of: ``python -c "import torch"`` (the
yardstick: the cost every torch program pays), ``convlens --help``, ``convlens COMMAND
--help`` for every command, and ``convlens predict fashion-cnn test:0`` (a whole command:
load the shipped model and the test set, one forward pass). Prints a Markdown table with
each figure also as a ratio to the torch import measured in the same run.

    uv run python benchmarks/cli_latency.py              # 5 repeats, about a minute
    uv run python benchmarks/cli_latency.py --repeats 9 --json benchmarks/results/cli_latency.json

Goals (issue 11): every ``--help`` under 0.5 s; ``predict`` within the torch import + 1 s.
"""

from __future__ import annotations

import argparse
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from convlens.cli import COMMANDS
from convlens.core.fileio import atomic_write_json


def command_line() -> list[str]:
    """The installed ``convlens`` script, else ``python -m convlens.cli``."""
    exe = shutil.which("convlens", path=str(Path(sys.executable).parent))
    return [exe] if exe else [sys.executable, "-m", "convlens.cli"]


def wall_time(argv: list[str], repeats: int) -> float:
    """Median seconds of ``repeats`` runs of ``argv`` after one untimed warm-up run
    (the warm-up fills the page cache, as any second use of a command would)."""
    times = []
    for i in range(repeats + 1):
        t = time.perf_counter()
        done = subprocess.run(argv, capture_output=True, text=True)
        elapsed = time.perf_counter() - t
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} failed:\n{done.stderr}")
        if i:
            times.append(elapsed)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    cli = command_line()
    names = [c.__name__.rsplit(".", 1)[-1] for c in COMMANDS]
    cases: list[tuple[str, list[str]]] = [
        ('python -c "import torch"', [sys.executable, "-c", "import torch"]),
        ("convlens --help", [*cli, "--help"]),
        *((f"convlens {n} --help", [*cli, n, "--help"]) for n in names),
        ("convlens predict fashion-cnn test:0", [*cli, "predict", "fashion-cnn", "test:0"]),
    ]
    rows: list[dict[str, Any]] = []
    for label, argv in cases:
        seconds = wall_time(argv, args.repeats)
        rows.append({"command": label, "seconds": seconds})
        print(f"{label}: {seconds:.3f} s", file=sys.stderr, flush=True)
    torch_s = rows[0]["seconds"]
    print(f"\nmedian of {args.repeats} runs each; {platform.processor() or platform.machine()}\n")
    print("| command | median s | x torch import |")
    print("|---|---|---|")
    for r in rows:
        print(f"| `{r['command']}` | {r['seconds']:.3f} | {r['seconds'] / torch_s:.2f} |")
    helps = [r["seconds"] for r in rows if r["command"].endswith("--help")]
    predict = rows[-1]["seconds"]
    print(
        f"\nslowest --help {max(helps):.3f} s (goal < 0.5 s); predict {predict:.2f} s = torch "
        f"import + {predict - torch_s:.2f} s (goal: + 1 s or less)"
    )
    if args.json:
        atomic_write_json(args.json, {"repeats": args.repeats, "rows": rows})


if __name__ == "__main__":
    main()
