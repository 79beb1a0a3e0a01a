"""``convlens predict``: top-k classes for image files or FashionMNIST test images."""

from __future__ import annotations

import argparse
from typing import Any

from convlens.cli.common import add_image_args, add_model_args, load_inputs, load_model


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "predict",
        help="top-k predictions for images",
        description="Print the top-k classes with probabilities for image files, or for "
        "FashionMNIST test images (test:N).",
    )
    add_model_args(p)
    add_image_args(p, "*")
    p.add_argument(
        "--test-index",
        type=int,
        nargs="+",
        default=[],
        metavar="I",
        help="FashionMNIST test images by index (the same as test:I)",
    )
    p.add_argument("--top", type=int, default=5, help="classes to show [5]")
    p.add_argument(
        "--invert",
        action="store_true",
        help="invert image files (dark garment on light background)",
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from convlens.inference import predict_logits

    specs = [*args.images, *(f"test:{i}" for i in args.test_index)]
    if not specs:
        raise ValueError("give image files, test:N, or --test-index I [I ...]")
    loaded = load_model(args)
    prep = loaded.preprocessing.replace(invert=args.invert)
    inputs = load_inputs(specs, prep, args.data_dir)
    probs = predict_logits(loaded.model, inputs.x).softmax(1)
    k = max(1, min(args.top, probs.shape[1]))
    top = probs.topk(k, dim=1)
    for name, label, p, c in zip(inputs.names, inputs.labels, top.values, top.indices, strict=True):
        print(f"{name}" + (f" (true: {loaded.classes[label]})" if label is not None else ""))
        for pi, ci in zip(p.tolist(), c.tolist(), strict=True):
            print(f"  {pi:6.1%}  {loaded.classes[ci]}")
    return 0
