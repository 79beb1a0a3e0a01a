"""``convlens evaluate``: test top-1 of a trained FashionMNIST model."""

from __future__ import annotations

import argparse
import json
from typing import Any

from convlens.cli.common import add_device_args, load_model


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "evaluate",
        help="test top-1 of a trained model",
        description="Print the FashionMNIST test top-1 accuracy of a model.",
    )
    p.add_argument(
        "model",
        metavar="RUN_DIR_OR_CHECKPOINT",
        help="a run directory, a model.pt/checkpoint.pt, or 'fashion-cnn'",
    )
    p.add_argument("--split", choices=("test", "train"), default="test")
    p.add_argument("--no-tta", action="store_true", help="no flip test-time augmentation")
    p.add_argument("--data-dir", help="folder holding the FashionMNIST .gz files")
    p.add_argument("--json", action="store_true", help="print a JSON object")
    p.add_argument(
        "--batch-size",
        type=int,
        help="images per pass [256 on a GPU; on the CPU 256 FashionMNIST images, fewer large ones]",
    )
    add_device_args(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from convlens.data import fashion_mnist as data
    from convlens.inference import evaluate

    if args.batch_size is not None and args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    loaded = load_model(args)
    ds = data.load_fashion_mnist(args.split, args.data_dir)
    tta = not args.no_tta
    top1 = evaluate(loaded.model, ds.images, ds.labels, tta=tta, batch_size=args.batch_size)
    if args.json:
        print(
            json.dumps(
                {
                    "model": args.model,
                    "split": args.split,
                    "images": len(ds),
                    "tta": tta,
                    "top1": top1,
                }
            )
        )
    else:
        print(
            f"{args.model}: {args.split} top-1 {top1:.4f} on {len(ds)} images"
            f"{' (flip TTA)' if tta else ''}"
        )
    return 0
