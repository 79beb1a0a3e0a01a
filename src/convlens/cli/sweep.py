"""``convlens sweep``: hyperparameter experiments on an Optuna study."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from convlens import sweep  # the spec part only: no Optuna, no torch
from convlens.config import TrainConfig, load_config_file, parse_sets

# Library argument names whose flag here has another name (see cli_message).
FLAGS = {
    "spec": "--param/--preset",
    "params": "--param",
    "presets": "--preset",
    "study_name": "--study",
    "storage_url": "--storage",
}


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "sweep",
        help="hyperparameter experiments (grid, presets, random/TPE search)",
        description="Train one run directory per trial of an Optuna study and plot top-1 "
        "against each hyperparameter. Lists of values make a grid; ranges "
        "(log:LO:HI, float:LO:HI, int:LO:HI) make a random or TPE search of --trials "
        "trials. Run the same command (or one with no --param/--preset) with the same "
        "--storage and --study on other machines to add workers.",
        epilog="presets (one hyperparameter at a time around the baseline): "
        + "; ".join(
            f"{name}: " + ", ".join(sweep.point_key(pt) for pt in points)
            for name, points in sweep.PRESETS.items()
        ),
    )
    p.add_argument("--out", type=Path, required=True, help="sweep directory")
    p.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUES",
        help="e.g. lr=0.05,0.1,0.2  optimizer=sgd,adam  widths=16x32x64,32x64x128  lr=log:1e-3:0.5",
    )
    p.add_argument(
        "--preset",
        action="append",
        default=[],
        choices=[*sweep.PRESETS, "all"],
        help="built-in experiment (repeatable)",
    )
    p.add_argument("--trials", type=int, help="trials in all, for a search")
    p.add_argument("--sampler", choices=("grid", "random", "tpe"), help="[grid; tpe for ranges]")
    p.add_argument("--storage", help="SQLAlchemy URL or journal:PATH [SQLite in --out]")
    p.add_argument("--study", default="sweep", help="study name [sweep]")
    p.add_argument("--jobs", type=int, default=1, help="parallel trials on this machine [1]")
    p.add_argument("--config", type=Path, help="baseline config file (JSON/TOML)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="change the baseline config, e.g. epochs=3 train_subset=10000",
    )
    p.add_argument("--seed", type=int, default=0, help="sampler seed [0]")
    p.add_argument("--no-plot", action="store_true", help="do not plot at the end")
    p.add_argument("--data-dir", help="folder holding the FashionMNIST .gz files")
    p.set_defaults(run=run)


def base_config(args: argparse.Namespace) -> TrainConfig:
    base = TrainConfig.from_dict(load_config_file(args.config)) if args.config else TrainConfig()
    changes = parse_sets(args.set)
    return base.replace(**changes) if changes else base


def run(args: argparse.Namespace) -> int:
    from convlens.render import training_figures
    from convlens.sweep import results as sweep_results
    from convlens.sweep import worker

    if args.jobs < 1:
        raise ValueError(f"--jobs must be >= 1, got {args.jobs}")
    spec = None
    if args.param or args.preset:
        spec = sweep.make_spec(
            base_config(args), args.param, args.preset, args.trials, args.sampler, args.seed
        )
    elif args.set or args.config:
        raise ValueError("--set/--config describe a new sweep: give --param or --preset too")
    storage = args.storage or worker.default_storage(args.out)
    args.interrupt_hint = (
        f"run the same command again to resume the sweep in {args.out} "
        "(finished trials are kept, interrupted ones resume from their last epoch)"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    # Create (or join) the study here, so parallel workers only ever join it.
    _, spec = worker.open_study(worker.open_storage(storage), args.study, spec)
    total = len(spec.points) if spec.kind != "search" else spec.trials
    print(f"study {args.study!r} in {storage}: {total} trials ({spec.kind})")
    if args.jobs == 1:
        report = worker.run_worker(
            args.out, storage, args.study, spec, data_dir=args.data_dir, on_trial=print_trial
        )
        print(
            f"this worker finished {len(report.completed)} trials"
            + (f", {len(report.failed)} diverged" if report.failed else "")
        )
    else:
        worker.run_parallel(args.out, storage, args.study, args.jobs, data_dir=args.data_dir)
    results = sweep_results.load_results(args.out, storage, args.study)
    if results.trials:
        best = results.trials[0]
        print(
            f"best so far: {sweep.point_key(best.point)}  val top-1 {best.val_top1:.4f}"
            + (f"  test top-1 {best.test_top1:.4f}" if best.test_top1 is not None else "")
        )
    if not args.no_plot and results.trials:
        for path in training_figures.write_sweep_figures(results, args.out / "figures"):
            print(f"wrote {path}")
    return 0


def print_trial(number: int, point: dict[str, Any], finished: bool) -> None:
    outcome = "finished" if finished else "diverged (non-finite loss)"
    print(f"trial {number} {sweep.point_key(point)}: {outcome}", flush=True)
