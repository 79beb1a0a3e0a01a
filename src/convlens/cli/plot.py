"""``convlens plot``: figures and tables of a sweep."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

FLAGS = {"study_name": "--study", "storage_url": "--storage"}  # see cli_message


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "plot",
        help="figures and a results table of a sweep",
        description="Write, into SWEEP_DIR/figures (or --out): top-1 against each "
        "hyperparameter for the training and validation sets, learning curves, and the "
        "results table (CSV and Markdown) sorted by validation top-1.",
    )
    p.add_argument("sweep_dir", type=Path, metavar="SWEEP_DIR")
    p.add_argument("--out", type=Path, help="output folder [SWEEP_DIR/figures]")
    p.add_argument("--storage", help="read the study from this URL instead of sweep.json's")
    p.add_argument("--study", help="study name instead of sweep.json's")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from convlens.render import training_figures
    from convlens.sweep import results as sweep_results

    results = sweep_results.load_results(args.sweep_dir, args.storage, args.study)
    if not results.trials:
        raise ValueError(f"no finished trials in {args.sweep_dir} yet")
    for path in training_figures.write_sweep_figures(
        results, args.out or args.sweep_dir / "figures"
    ):
        print(f"wrote {path}")
    if results.pending:
        print(f"note: {results.pending} trials are still queued or running")
    return 0
