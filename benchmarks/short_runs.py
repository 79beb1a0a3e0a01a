"""Short runs of the default configuration: the figures a change of default must keep.

A default has to learn at every length a user picks, not only at the benchmark's 24
epochs. This prints, for the default (with ``--set`` changes, e.g. ``--set
backprop_warmup=0`` for the default before its warm-up):

- ``quick``: test top-1 of ``convlens train --epochs 4 --train-subset 12000 --seed 3``;
- ``one``: test top-1 of ``convlens train --epochs 1`` (all 50,000 training images);
- ``demo``: validation top-1 of each trial of ``make demo``'s learning-rate sweep;
- ``guard``: test top-1 (first 2,000 test images) of the runs that
  ``tests/training/test_short_runs.py`` guards: 1, 2 and 4 epochs on the first 10,000 training
  images, with the seeds given, from which its thresholds are set.

    uv run python benchmarks/short_runs.py
    uv run python benchmarks/short_runs.py --only guard --seeds 0 1 2
    uv run python benchmarks/short_runs.py --set backprop_warmup=0
"""

from __future__ import annotations

import argparse
import functools
import statistics
import tempfile
import time
from pathlib import Path

from convlens import sweep
from convlens.config import TrainConfig, parse_sets
from convlens.core.device import autocast_dtype, machine_info, resolve_device
from convlens.data import fashion_mnist as fm
from convlens.sweep import results, worker
from convlens.training.loop import train

# what tests/training/test_short_runs.py trains
GUARD_SUBSET = 10_000
GUARD_EPOCHS = (1, 2, 4)
GUARD_VAL, GUARD_TEST = 1_000, 2_000


@functools.cache
def guard_data() -> tuple[fm.Dataset, fm.Dataset, fm.Dataset]:
    """The guard's training, validation and test images (read once per process)."""
    train_set, val_set = fm.train_val_split(fm.load_fashion_mnist("train"), 10_000, seed=0)
    test = fm.load_fashion_mnist("test")
    return (
        train_set.subset(slice(0, GUARD_SUBSET)),
        val_set.subset(slice(0, GUARD_VAL)),
        test.subset(slice(0, GUARD_TEST)),
    )


def guard_run(config: TrainConfig, epochs: int, seed: int, folder: Path) -> float:
    """Test top-1 of one guarded short run of ``config``."""
    train_set, val_set, test = guard_data()
    cfg = config.replace(epochs=epochs, seed=seed)
    result = train(cfg, folder / f"e{epochs}-s{seed}", datasets=(train_set, val_set), test=test)
    return float(result.summary["test_top1"])


def timed_train(config: TrainConfig, folder: Path) -> tuple[float, float]:
    t0 = time.perf_counter()
    result = train(config, folder, progress=False)
    return float(result.summary["test_top1"]), time.perf_counter() - t0


def demo_sweep(base: TrainConfig, folder: Path) -> dict[str, float]:
    """Validation top-1 of each trial of the demo's sweep, on ``base`` with its changes."""
    from convlens.cli.demo import DEMO_BASE, DEMO_SWEEP

    spec = sweep.make_spec(base.replace(**DEMO_BASE), DEMO_SWEEP)
    worker.run_worker(folder, None, "sweep", spec, progress=False)
    found = results.load_results(folder)
    return {sweep.point_key(t.point): t.val_top1 for t in found.trials}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=("quick", "one", "demo", "guard"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="guard seeds [0]")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE")
    args = parser.parse_args()
    base = TrainConfig().replace(**parse_sets(args.set))
    parts = args.only or ["quick", "one", "demo", "guard"]
    info = machine_info()
    amp = autocast_dtype(base.precision, resolve_device(base.device))
    print(f"machine: {info['processor']}, {info['threads']} threads, torch {info['torch']}")
    print(f"precision: {'bf16 autocast' if amp else 'fp32'}; changes: {args.set or 'none'}")
    rows: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if "quick" in parts:
            top1, s = timed_train(
                base.replace(epochs=4, train_subset=12_000, seed=3), folder / "quick"
            )
            rows.append(("--epochs 4 --train-subset 12000 --seed 3", f"{top1:.2%} ({s:.0f} s)"))
        if "one" in parts:
            top1, s = timed_train(base.replace(epochs=1), folder / "one")
            rows.append(("--epochs 1", f"{top1:.2%} ({s:.0f} s)"))
        if "demo" in parts:
            vals = demo_sweep(base, folder / "demo")
            text = ", ".join(f"{k} {v:.2%}" for k, v in sorted(vals.items()))
            rows.append(("demo sweep, validation top-1", text))
        if "guard" in parts:
            for epochs in GUARD_EPOCHS:
                tops = [guard_run(base, epochs, seed, folder / "guard") for seed in args.seeds]
                rows.append(
                    (
                        f"guard: {epochs} epoch(s) on {GUARD_SUBSET} images",
                        f"min {min(tops):.2%}, mean {statistics.mean(tops):.2%} "
                        f"({', '.join(f'{t:.2%}' for t in tops)})",
                    )
                )
            print("guard runs:", {"seeds": args.seeds}, flush=True)
    print()
    print("| run | top-1 |")
    print("|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    main()
