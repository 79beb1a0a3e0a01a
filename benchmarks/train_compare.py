"""Compare training configurations over several seeds: the command behind the tables of
``docs/experiments.md``.

Each variant is a name and config changes; every (variant, seed) trains one run
directory with ``convlens train`` in its own process, ``--jobs`` at a time with the
cores shared between them. A run whose ``summary.json`` exists is not trained again, so
an interrupted comparison continues where it stopped. Prints, per variant, validation
and test top-1 (mean over seeds, and each seed) and the training seconds. Model choices
are made on validation; test is shown because every finished run reports it.

    uv run python benchmarks/train_compare.py --out runs/compare --seeds 0 1 --jobs 2 \\
        base wd1e-3:weight_decay=1e-3 ema:ema_decay=0.995

When runs share the cores (``--jobs 2``), their seconds compare them with each other,
not with ``benchmarks/train_speed.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from convlens.config import TrainConfig, parse_sets


def parse_variant(text: str) -> tuple[str, dict[str, str]]:
    """``name:field=value,field=value`` (values may not contain commas; use ``x`` in
    tuples: ``widths=32x64x160``) -> the name and its changes, checked."""
    name, _, rest = text.partition(":")
    changes = parse_sets(p for p in rest.split(",") if p)
    TrainConfig().replace(**changes)  # fail now on a bad field or value
    return name, changes


# the command of the environment running this script, found without activating it
CONVLENS = shutil.which("convlens") or str(Path(sys.executable).with_name("convlens"))


def check_reused(out: Path, changes: dict[str, str], seed: int) -> None:
    """Refuse to reuse a run directory trained with another config than the variant's
    (say, under an earlier default): the thread count aside, it must be the same."""
    saved = TrainConfig.from_saved(json.loads((out / "config.json").read_text()))
    saved = saved.replace(threads=0).to_dict()
    wanted = TrainConfig().replace(**changes, seed=seed).to_dict()
    if saved != wanted:
        differ = sorted(k for k, v in wanted.items() if saved[k] != v)
        raise SystemExit(
            f"{out} was trained with another config ({', '.join(differ)} differ, e.g. under "
            "an earlier default); name the variant differently or spell those fields out"
        )


def train_one(out: Path, changes: dict[str, str], seed: int, threads: int) -> dict[str, float]:
    summary = out / "summary.json"
    if out.exists():
        check_reused(out, changes, seed)
    if not summary.is_file():
        if out.exists():  # an interrupted run: continue it
            cmd = [CONVLENS, "train", "--resume", str(out), "--no-progress"]
        else:
            cmd = [CONVLENS, "train", "--out", str(out), "--no-progress", "--seed", str(seed),
                   "--threads", str(threads)]  # fmt: skip
            for k, v in changes.items():
                cmd += [f"--{k.replace('_', '-')}", v]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    result: dict[str, float] = json.loads(summary.read_text())
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variants", nargs="+", help="name:field=value,... ('base' alone: defaults)")
    parser.add_argument("--out", type=Path, default=Path("runs/compare"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    variants = [parse_variant(v) for v in args.variants]
    threads = max(1, (os.cpu_count() or 1) // args.jobs)
    tasks = [(name, changes, seed) for name, changes in variants for seed in args.seeds]
    with ThreadPoolExecutor(args.jobs) as pool:
        futures = {
            (name, seed): pool.submit(
                train_one, args.out / f"{name}-s{seed}", changes, seed, threads
            )
            for name, changes, seed in tasks
        }
        results = {key: f.result() for key, f in futures.items()}
    seeds = " ".join(map(str, args.seeds))
    print(f"| variant | changes | val top-1 | test top-1 | test, seeds {seeds} | train s |")
    print("|---|---|---|---|---|---|")
    for name, changes in variants:
        runs = [results[(name, s)] for s in args.seeds]
        val = statistics.mean(r["val_top1"] for r in runs)
        test = statistics.mean(r["test_top1"] for r in runs)
        each = ", ".join(f"{r['test_top1']:.2%}" for r in runs)
        secs = statistics.mean(r["train_seconds"] for r in runs)
        desc = ", ".join(f"{k}={v}" for k, v in changes.items()) or "(default)"
        print(f"| {name} | {desc} | {val:.2%} | {test:.2%} | {each} | {secs:.0f} |")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
