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
    from torch import nn

    from convlens.core.hooks import activations, conv_layer_names

    loaded = load_model(args)
    h, w = (args.size, args.size) if args.size else loaded.preprocessing.input_size
    channels = loaded.preprocessing.channels
    names = conv_layer_names(loaded.model)
    _, acts = activations(loaded.model, torch.zeros(1, channels, h, w), names)
    modules = dict(loaded.model.named_modules())
    width = max(len(n) for n in names)
    print(f"{loaded.name}: {len(names)} conv layers for input 1x{channels}x{h}x{w}")
    for name in names:
        conv = modules[name]
        assert isinstance(conv, nn.Conv2d)
        k = "x".join(map(str, conv.kernel_size))
        shape = "x".join(map(str, acts[name].shape))
        print(
            f"  {name:<{width}}  {conv.in_channels:>4} -> {conv.out_channels:<4} "
            f"k{k} s{conv.stride[0]}  out {shape}"
        )
    return 0
