"""``convlens predict``: top-k classes for image files or FashionMNIST test images."""

from __future__ import annotations

import argparse
from typing import Any

import torch

from convlens import data, images, models
from convlens.train import predict_logits


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "predict",
        help="top-k predictions for images",
        description="Print the top-k classes with probabilities for image files, or for "
        "FashionMNIST test images chosen by index.",
    )
    p.add_argument("model", help="a run directory, a model.pt/checkpoint.pt, or 'fashion-cnn'")
    p.add_argument("images", nargs="*", metavar="IMAGE", help="image files")
    p.add_argument(
        "--test-index",
        type=int,
        nargs="+",
        default=[],
        metavar="I",
        help="FashionMNIST test images by index",
    )
    p.add_argument("--top", type=int, default=5, help="classes to show [5]")
    p.add_argument(
        "--invert",
        action="store_true",
        help="invert image files (dark garment on light background)",
    )
    p.add_argument("--data-dir", help="folder holding the FashionMNIST .gz files")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if not args.images and not args.test_index:
        raise ValueError("give image files or --test-index I [I ...]")
    loaded = models.load(args.model)
    names: list[str] = []
    batches: list[torch.Tensor] = []
    truth: list[str | None] = []
    if args.images:
        prep = {**loaded.preprocessing, "invert": args.invert}
        batches.append(images.load_batch(args.images, prep))
        names += args.images
        truth += [None] * len(args.images)
    if args.test_index:
        test = data.load_fashion_mnist("test", args.data_dir)
        bad = [i for i in args.test_index if not 0 <= i < len(test)]
        if bad:
            raise ValueError(f"test indices {bad} out of range 0..{len(test) - 1}")
        idx = torch.tensor(args.test_index)
        batches.append(data.to_float(test.images[idx]))
        names += [f"test[{i}]" for i in args.test_index]
        truth += [test.classes[int(test.labels[i])] for i in args.test_index]
    probs = predict_logits(loaded.model, torch.cat(batches)).softmax(1)
    k = max(1, min(args.top, probs.shape[1]))
    top = probs.topk(k, dim=1)
    for name, t, p, c in zip(names, truth, top.values, top.indices, strict=True):
        print(f"{name}" + (f" (true: {t})" if t else ""))
        for pi, ci in zip(p.tolist(), c.tolist(), strict=True):
            print(f"  {pi:6.1%}  {loaded.classes[ci]}")
    return 0
