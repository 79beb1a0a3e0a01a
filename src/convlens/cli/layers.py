"""``convlens layers``: the conv layers of a model with their output shapes."""

from __future__ import annotations

import argparse
from typing import Any

from convlens.cli.common import add_model_args, load_model


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "layers",
        help="list conv layers and output shapes",
        description="Print every Conv2d layer of MODEL with its output shape "
        "for one input of the given size.",
    )
    add_model_args(p)
    p.add_argument("--size", type=int, help="input height and width [the model's own]")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from convlens.core.hooks import list_layers

    loaded = load_model(args)
    h, w = (args.size, args.size) if args.size else loaded.preprocessing.input_size
    channels = loaded.preprocessing.channels
    rows = list_layers(loaded.model, torch.zeros(1, channels, h, w))
    width = max((len(r.name) for r in rows), default=0)
    print(f"{loaded.name}: {len(rows)} conv layers for input 1x{channels}x{h}x{w}")
    for r in rows:
        k = "x".join(map(str, r.kernel))
        out = (
            "x".join(map(str, r.output_shape))
            if r.output_shape is not None
            else "does not run in evaluation mode"
        )
        conv = f"{r.in_channels:>4} -> {r.out_channels:<4} k{k} s{r.stride[0]}"
        print(f"  {r.name:<{width}}  {conv}  out {out}")
    return 0
