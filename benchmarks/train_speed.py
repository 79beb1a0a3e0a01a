"""Training speed and accuracy of FashionMNIST configurations, side by side.

Trains each preset given (``--configs``; ``convlens.config.PRESETS``) once per seed, one
after another in one run, and prints per preset, as a Markdown table: training images/s,
wall time of a run, test top-1 (mean and spread over seeds), the time at which
validation top-1 first reached 93%, and the network's achieved FLOP rate as a fraction
of this machine's fp32 matmul rate, measured in the same run. ``--figure`` plots
validation top-1 against elapsed seconds, epoch by epoch, for every preset in one
figure (time to accuracy).

    uv run python benchmarks/train_speed.py            # the default, 3 seeds, ~6 minutes
    uv run python benchmarks/train_speed.py --configs previous default best \
        --json benchmarks/results/train_speed.json --figure docs/time_to_accuracy.png
    uv run python benchmarks/train_speed.py --seeds 1 --epochs 2
    uv run python benchmarks/train_speed.py --seeds 1 --set depth=1,1,2 --set low_res=0
    uv run python benchmarks/train_speed.py --table benchmarks/results/train_speed.json
    uv run python benchmarks/train_speed.py --configs no-warmup default --interleave \
        --keep runs/bench-warmup --json benchmarks/results/train_speed_warmup.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from convlens.config import PRESETS, TrainConfig, parse_sets, preset
from convlens.core.device import machine_info
from convlens.core.fileio import atomic_write_json
from convlens.models import build_model
from convlens.training.loop import train

BENCH_RECORD = "bench.json"  # in a kept run directory: the benchmark's figures of that run


def matmul_gflops(n: int = 2048, repeats: int = 10) -> float:
    """fp32 matrix-multiply rate of this machine, GFLOP/s (2 n^3 per product)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    t = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n**3 * repeats / (time.perf_counter() - t) / 1e9


def forward_flops(model: nn.Module, shape: tuple[int, ...] = (1, 1, 28, 28)) -> int:
    """FLOPs (2 x multiply-adds) of one forward pass through conv and linear layers."""
    total = 0

    def hook(m: nn.Module, inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(m, nn.Conv2d):
            k = m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]
            total += 2 * k * out.numel()
        elif isinstance(m, nn.Linear):
            total += 2 * m.in_features * out.numel()

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(shape))
    finally:
        for h in handles:
            h.remove()
    return total


def training_flops(config: TrainConfig) -> float:
    """Mean forward FLOPs per training image over the epochs (their sizes differ)."""
    model = build_model(config)
    sizes = [config.image_size(e) for e in range(config.epochs)]
    return statistics.mean(forward_flops(model, (1, 1, s, s)) for s in sizes)


def forward_passes(config: TrainConfig, train_size: int = 50_000) -> float:
    """Forward-pass equivalents per training image, mean over the epochs: forward and
    backward of every image cost about 3; an epoch of selective backprop costs a ranking
    forward pass of every image (when it ranks afresh) and 3 x ``backprop_fraction``."""
    per_epoch = []
    for epoch in range(config.epochs):
        if not config.selective_epoch(epoch, train_size):
            per_epoch.append(3.0)
        else:
            fresh = epoch % config.rank_every == 0
            per_epoch.append(float(fresh) + 3 * config.backprop_fraction)
    return statistics.mean(per_epoch)


def threads_used(config: TrainConfig, machine: dict[str, Any]) -> int:
    """The CPU threads the runs of ``config`` trained with: its ``threads`` when set
    (``--set threads=N``), else the benchmark process's count."""
    return config.threads or int(machine["threads"])


def print_table(record: dict[str, Any]) -> None:
    """The Markdown table of a benchmark record (what ``--json`` writes)."""
    runs = record["runs"]
    config = TrainConfig.from_saved(record["config"])
    peak, flops = record["matmul_gflops"], record["forward_flops"]
    train_flops = record["train_forward_flops"]
    ips = statistics.mean(r["images_per_s"] for r in runs)
    tests = [r["test_top1"] for r in runs]
    spread = statistics.stdev(tests) if len(tests) > 1 else 0.0
    reached = [r["reach_93_val_s"] for r in runs if r["reach_93_val_s"] is not None]
    passes = forward_passes(config)
    achieved = passes * train_flops * ips / 1e9
    info = record["machine"]
    threads = threads_used(config, info)
    print(f"machine: {info['processor']}, {threads} threads, torch {info['torch']}")
    print(f"config: {json.dumps(config.to_dict())}")
    print()
    print("| figure | value |")
    print("|---|---|")
    print(f"| training images/s, each counted once per epoch (mean of {len(runs)}) | {ips:.0f} |")
    print(
        f"| wall time of a {config.epochs}-epoch run, s (mean) | "
        f"{statistics.mean(r['wall_s'] for r in runs):.0f} |"
    )
    print(
        f"| test top-1, mean ± sd over {len(runs)} seeds | "
        f"{100 * statistics.mean(tests):.2f}% ± {100 * spread:.2f} "
        f"({', '.join(f'{100 * t:.2f}' for t in tests)}) |"
    )
    print(
        "| time to first reach 93% val top-1, s | "
        + (
            f"{statistics.mean(reached):.0f} ({len(reached)}/{len(runs)} runs)"
            if reached
            else "not reached"
        )
        + " |"
    )
    print(f"| forward MFLOP per image at 28 px | {flops / 1e6:.1f} |")
    print(f"| forward MFLOP per training image, mean over epochs | {train_flops / 1e6:.1f} |")
    print(f"| machine fp32 matmul GFLOP/s | {peak:.0f} |")
    print(
        f"| achieved training GFLOP/s ({passes:g} x forward) | {achieved:.1f} "
        f"({100 * achieved / peak:.0f}% of fp32 matmul) |"
    )


def kept_record(run_dir: Path, config: TrainConfig) -> dict[str, Any] | None:
    """The benchmark's record of a finished run of ``config`` kept in ``run_dir``, or
    ``None``. A run left without its record (the benchmark was interrupted during it) or
    made with another config (a preset changed since) is deleted, to be trained again."""
    record_file = run_dir / BENCH_RECORD
    if record_file.is_file():
        record: dict[str, Any] = json.loads(record_file.read_text())
        saved = record.get("config")  # fields added since take their reproducing value
        if isinstance(saved, dict) and TrainConfig.from_saved(saved) == config:
            return record
    if run_dir.exists():
        print(f"{run_dir}: unfinished or made with another config; training it again")
        shutil.rmtree(run_dir)
    return None


def run_config(
    name: str, config: TrainConfig, seeds: list[int], keep: Path | None
) -> list[dict[str, Any]]:
    """Train ``config`` once per seed; per run: wall time, images/s, test and validation
    top-1, and the curve of validation top-1 against elapsed seconds, epoch by epoch.

    With ``keep``, the runs stay there with their record, and a finished run of the same
    config is not trained again: an interrupted benchmark continues where it stopped."""
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            cfg = config.replace(seed=seed)
            run_dir = (keep or Path(tmp)) / f"{name}-seed{seed}"
            if keep and (kept := kept_record(run_dir, cfg)):
                runs.append(kept["run"])
                print(f"{run_dir}: kept from an earlier benchmark run", flush=True)
                continue
            t0 = time.perf_counter()
            result = train(cfg, run_dir, progress=False)
            wall = time.perf_counter() - t0
            train_images = (60_000 - cfg.val_size) // cfg.batch_size * cfg.batch_size
            train_s = sum(m["train_seconds"] for m in result.metrics)
            elapsed, reach, curve = 0.0, None, []
            for m in result.metrics:
                elapsed += m["seconds"]
                curve.append([elapsed, m["val_top1"]])
                if reach is None and m["val_top1"] >= 0.93:
                    reach = elapsed
            runs.append(
                {
                    "seed": seed,
                    "wall_s": wall,
                    "train_s": train_s,
                    "images_per_s": train_images * cfg.epochs / train_s,
                    "test_top1": result.summary["test_top1"],
                    "val_top1": result.summary["val_top1"],
                    "reach_93_val_s": reach,
                    "curve": curve,
                }
            )
            atomic_write_json(run_dir / BENCH_RECORD, {"config": cfg.to_dict(), "run": runs[-1]})
            print(json.dumps({"config": name, **runs[-1], "curve": None}), flush=True)
    return runs


def draw_time_to_accuracy(record: dict[str, Any], path: Path) -> None:
    """Validation top-1 against elapsed seconds (mean over seeds, one point per epoch)
    for every configuration of the record, in one figure."""
    from convlens.render import figure

    fig = figure.Figure(figsize=(7.5, 4.2))
    ax = fig.subplots()
    for name, rec in record["configs"].items():
        runs = rec["runs"]
        epochs = len(runs[0]["curve"])
        xs = [statistics.mean(r["curve"][e][0] for r in runs) for e in range(epochs)]
        ys = [100 * statistics.mean(r["curve"][e][1] for r in runs) for e in range(epochs)]
        test = 100 * statistics.mean(r["test_top1"] for r in runs)
        ax.plot(xs, ys, marker="o", markersize=3,
                label=f"{name}: test {test:.2f}% (mean of {len(runs)})")  # fmt: skip
    ax.set_ylim(85, 96)
    info = record["machine"]
    configs = [TrainConfig.from_saved(r["config"]) for r in record["configs"].values()]
    threads = sorted({threads_used(c, info) for c in configs})
    ax.set_xlabel(
        f"seconds since the start of training ({'/'.join(map(str, threads))} CPU threads)"
    )
    ax.set_ylabel("validation top-1 after the epoch, %")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(f"time to accuracy on {info['processor']}", fontsize=10)
    figure.save_figure(fig, path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument(
        "--configs",
        nargs="+",
        default=["default"],
        choices=tuple(PRESETS),
        help="presets to train side by side (convlens.config.PRESETS) [default]",
    )
    parser.add_argument("--epochs", type=int, help="override the epochs of every config")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--figure", type=Path, help="write the time-to-accuracy figure here")
    parser.add_argument("--table", type=Path, help="only print the tables of a --json file")
    parser.add_argument("--keep", type=Path, help="keep the run directories here")
    parser.add_argument(
        "--interleave",
        action="store_true",
        help="train seed by seed across the configs (seed 0 of each, then seed 1, ...), so "
        "that a slower spell of a shared machine hits every config alike",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="change every config, e.g. --set depth=1,1,2",
    )
    args = parser.parse_args()
    if args.table:
        record = json.loads(args.table.read_text())
        for name, rec in record["configs"].items():
            print(f"\n## {name}\n")
            print_table({**rec, "matmul_gflops": record["matmul_gflops"],
                         "machine": record["machine"]})  # fmt: skip
        return

    try:
        changes = parse_sets(args.set)
        if args.epochs:
            changes["epochs"] = str(args.epochs)
        configs = {name: preset(name).replace(**changes) for name in args.configs}
    except ValueError as e:
        parser.error(str(e))
    peak = matmul_gflops()
    record: dict[str, Any] = {"configs": {}, "matmul_gflops": peak, "machine": machine_info()}
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in configs}
    batches = [[s] for s in range(args.seeds)] if args.interleave else [list(range(args.seeds))]
    for seeds in batches:
        for name, config in configs.items():
            runs[name] += run_config(name, config, seeds, args.keep)
    for name, config in configs.items():
        record["configs"][name] = {
            "runs": runs[name],
            "config": config.to_dict(),
            "forward_flops": forward_flops(build_model(config)),
            "train_forward_flops": training_flops(config),
        }
    for name, rec in record["configs"].items():
        print(f"\n## {name}\n")
        print_table({**rec, "matmul_gflops": peak, "machine": record["machine"]})
    if args.json:
        atomic_write_json(args.json, record)
    if args.figure:
        draw_time_to_accuracy(record, args.figure)
        print(f"\nwrote {args.figure}")


if __name__ == "__main__":
    main()
