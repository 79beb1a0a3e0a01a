"""``convlens train``: train a FashionMNIST network into a run directory, or resume one."""

from __future__ import annotations

import argparse
import dataclasses
import typing
from pathlib import Path
from typing import Any

from convlens.config import PRESETS, TrainConfig, coerce, load_config_file, preset


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One ``--field`` flag per :class:`TrainConfig` field (default: unset)."""
    group = parser.add_argument_group("training configuration (defaults in brackets)")
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        metavar = "N,N,..." if typing.get_origin(hints[f.name]) is tuple else f.name.upper()
        default = f.default
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        group.add_argument(
            flag, dest=f"cfg_{f.name}", metavar=metavar, default=None, help=f"[{shown}]"
        )


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Defaults, then the ``--preset``, then the ``--config`` file, then explicit flags."""
    values = preset(getattr(args, "preset", None) or "default").to_dict()
    if getattr(args, "config", None):
        values.update(load_config_file(args.config))
    for f in dataclasses.fields(TrainConfig):
        v = getattr(args, f"cfg_{f.name}", None)
        if v is not None:
            values[f.name] = coerce(f.name, v)
    return TrainConfig.from_dict(values)


# Library argument names whose flag here has another name (see cli_message).
FLAGS = {"run_dir": "--out"}


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "train",
        help="train a FashionMNIST CNN",
        description="Train a FashionMNIST CNN into a run directory (config.json, metrics.json, "
        "checkpoint.pt every epoch; model.pt and summary.json at the end).",
    )
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--out", type=Path, help="new run directory")
    where.add_argument(
        "--resume",
        type=Path,
        metavar="RUN_DIR",
        help="continue an interrupted run with its own config",
    )
    p.add_argument(
        "--preset",
        choices=tuple(PRESETS),
        help="a named configuration: best (2x wider, 28 epochs, random erasing: about 13 "
        "minutes on 2 cores on an Intel Xeon), previous (the default of an earlier release: 10 "
        "epochs on every image), no-warmup (the default before its warm-up: selective "
        "backprop from the first step), shuffled-labels (labels permuted at random, every image, "
        "no augmentation: the network of the data randomisation sanity check) [default]",
    )
    p.add_argument("--config", type=Path, help="JSON or TOML file of config fields")
    p.add_argument("--data-dir", help="folder holding the FashionMNIST .gz files")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_config_flags(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from convlens.training.loop import resume, train

    progress = False if args.no_progress else None
    if args.resume is not None:
        given = [
            f.name
            for f in dataclasses.fields(TrainConfig)
            if getattr(args, f"cfg_{f.name}") is not None
        ]
        given += [flag for flag in ("--preset", "--config") if getattr(args, flag[2:])]
        if given:
            raise ValueError(
                "--resume continues a run with its saved config; drop the config flags "
                f"({', '.join(given)})"
            )
        run_dir = args.resume
        args.interrupt_hint = f"resume with: convlens train --resume {run_dir}"
        result = resume(run_dir, data_dir=args.data_dir, progress=progress)
    else:
        config = config_from_args(args)
        run_dir = args.out
        args.interrupt_hint = f"resume with: convlens train --resume {run_dir}"
        result = train(config, run_dir, data_dir=args.data_dir, progress=progress)
    last = result.metrics[-1] if result.metrics else {}
    s = result.summary
    print(
        f"run {run_dir}: {len(result.metrics)} epochs, val top-1 {last.get('val_top1', 0):.4f}, "
        f"test top-1 {s.get('test_top1') or float('nan'):.4f}, {s.get('seconds', 0):.0f} s"
    )
    return 0
