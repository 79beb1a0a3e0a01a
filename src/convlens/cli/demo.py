"""``convlens demo``: the main job on built-in defaults (what ``make demo`` runs)."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

from convlens import sweep
from convlens.cli.common import add_device_args
from convlens.config import TrainConfig

# The demo's sweep: three learning rates on a fifth of the data for three epochs (the first
# at 20 px), so it runs in about a minute on two cores. With two epochs the highest rate
# ended at 75% validation top-1; three let every trial learn. `convlens sweep --preset all`
# is the real thing.
DEMO_SWEEP = ["lr=0.05,0.2,0.8"]
DEMO_BASE = {"epochs": 3, "train_subset": 10_000, "val_size": 5_000}


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "demo",
        help="run the main job on built-in defaults",
        description="Evaluate the shipped FashionMNIST model (or, with --train, train the "
        "default configuration, reusing or resuming an earlier run) on the test set, run a "
        "small learning-rate sweep, dissect the units of its last stage over the test set, "
        "and write an HTML report of every answer of the problem set for a few test images "
        "of different classes.",
    )
    p.add_argument("--out", type=Path, default=Path("demo"), help="output folder [demo]")
    p.add_argument(
        "--train",
        action="store_true",
        help="train the default config into OUT/run instead of using the shipped model",
    )
    p.add_argument("--no-sweep", action="store_true", help="skip the small sweep")
    p.add_argument("--data-dir", help="folder holding the FashionMNIST .gz files")
    add_device_args(p)  # the analyses' device; the sweep's training keeps its own config
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    # Long but linear: the demo's steps (model, results, sweep, dissection, report) in turn.
    from convlens import models
    from convlens.cli.common import load_inputs
    from convlens.cli.sweep import print_trial
    from convlens.core.device import resolve_device
    from convlens.core.fileio import atomic_write_json
    from convlens.data import fashion_mnist as data
    from convlens.data.sources import FashionSplit
    from convlens.inference import evaluate, predict_logits
    from convlens.interpret.dissect import dissect
    from convlens.render import report
    from convlens.render.atlas import write_atlas
    from convlens.sweep import worker
    from convlens.training.loop import resume, train

    out: Path = args.out
    if args.train:
        run_dir = out / "run"
        args.interrupt_hint = "run `convlens demo --train` again to resume"
        if not (run_dir / "model.pt").is_file():
            again = (run_dir / "checkpoint.pt").is_file()
            print(("resuming" if again else "training") + f" the default config in {run_dir}")
            if again:
                resume(run_dir, data_dir=args.data_dir)
            else:
                train(TrainConfig(), run_dir, data_dir=args.data_dir)
        source = str(run_dir)
    else:
        source = "fashion-cnn"
    loaded = models.load(source)
    loaded.model.to(resolve_device(args.device))
    test = data.load_fashion_mnist("test", args.data_dir)
    top1 = evaluate(loaded.model, test.images, test.labels, tta=True)
    # one test image of each class
    first = [int((test.labels == c).nonzero()[0]) for c in range(len(test.classes))]
    probs = predict_logits(loaded.model, test.images[first]).softmax(1)
    rows = []
    for i, p in zip(first, probs, strict=True):
        conf, pred = p.max(0)
        rows.append(
            {
                "index": i,
                "true": test.classes[int(test.labels[i])],
                "predicted": loaded.classes[int(pred)],
                "probability": float(conf),
            }
        )
    atomic_write_json(out / "results.json", {"model": source, "test_top1": top1, "examples": rows})
    print(f"model {source}: FashionMNIST test top-1 {top1:.4f} (flip TTA)")
    for r in rows:
        mark = "ok " if r["true"] == r["predicted"] else "MISS"
        print(
            f"  {mark} test[{r['index']:4d}] {r['true']:<12} -> {r['predicted']:<12} "
            f"{r['probability']:.1%}"
        )
    print(f"results written to {out / 'results.json'}")

    sweep_dir = None
    if not args.no_sweep:
        sweep_dir = out / "sweep"
        spec = sweep.make_spec(TrainConfig().replace(**DEMO_BASE), DEMO_SWEEP)
        _clear_outdated_sweep(sweep_dir, spec)
        print(f"small sweep ({len(spec.points)} trials of {DEMO_BASE}) in {sweep_dir}")
        args.interrupt_hint = "run `make demo` again to resume"
        worker.run_worker(
            sweep_dir, None, "sweep", spec, data_dir=args.data_dir, on_trial=print_trial
        )
    dissection = out / "dissect"
    print(f"dissecting the units of features over the test set into {dissection}")
    test_source = FashionSplit("test", args.data_dir)
    d = dissect(loaded.model, test_source, "features")
    write_atlas(d, test_source, dissection, f"{source}: units of features")
    picks = [f"test:{i}" for i in first[:4]]  # four classes: T-shirt, trouser, pullover, dress
    inputs = load_inputs(picks, loaded.preprocessing, args.data_dir)
    options = report.ReportOptions(
        run_dir=Path(source) if args.train else None,
        sweep_dir=sweep_dir,
        test_top1=top1,
        dissection=dissection,
    )
    path = report.build_report(loaded, inputs, out / "report", options)
    print(f"report written; open {path.resolve()}")
    return 0


def _clear_outdated_sweep(sweep_dir: Path, spec: sweep.SweepSpec) -> None:
    """Remove the demo's own sweep folder when an earlier convlens made it with other
    settings: its study could not be joined, and its trials would be refused."""
    meta = sweep_dir / "sweep.json"
    if not meta.is_file():
        return
    try:
        same = sweep.SweepSpec(**json.loads(meta.read_text())["spec"]) == spec
    except (ValueError, KeyError, TypeError):
        same = False
    if not same:
        print(f"the demo sweep in {sweep_dir} was made with other settings; running it anew")
        shutil.rmtree(sweep_dir)
