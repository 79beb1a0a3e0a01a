"""TCAV's speed against captum's on the same job (issue 41: 3 concepts x 50 random runs x
2 layers in at most 60 s, at least 5x captum): the shipped fashion-cnn, layers
``features.1`` and ``features``, drawn stripes, dots and checkers and 50 random sets of 50
FashionMNIST test images, the Trouser class's first 50 test images, SGD CAVs (captum's
default classifier and settings) on both sides.

convlens fits each SGD CAV on the examples' coordinates in their span (the same CAV as on
all the features, ``tcav.sgd_vectors``), from one Gram matrix per layer.

captum's job is its own recipe for the same question: every concept against every
random set, and the first random set against the others as the null, so 200 CAVs per
layer; convlens fits 50 per concept and 50 x 10 for its null, 650 per layer. Both
compute the activations and gradients once.

    uv run python benchmarks/tcav_speed.py [--runs 50] [--json benchmarks/results/tcav_speed.json]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import torch

from convlens import models
from convlens.core.device import machine_info
from convlens.core.fileio import atomic_write_json
from convlens.data import fashion_mnist, patterns
from convlens.interpret.concepts import tcav

LAYERS = ["features.1", "features"]
CONCEPTS = ("stripes-0", "dots", "checkers")
PER_SET = 50
TARGET = 1  # Trouser


def job(
    runs: int,
) -> tuple[torch.nn.Module, torch.Tensor, dict[str, torch.Tensor], list[torch.Tensor]]:
    model = models.load("fashion-cnn").model.eval()
    data = fashion_mnist.load_fashion_mnist("test")
    images = fashion_mnist.to_float(data.images)
    inputs = images[data.labels == TARGET][:PER_SET]
    prep = fashion_mnist.PREPROCESSING
    concepts = {c: patterns.as_inputs(patterns.draw(c, PER_SET, 28, seed=i), prep)
                for i, c in enumerate(CONCEPTS)}  # fmt: skip
    g = torch.Generator().manual_seed(0)
    randoms = [images[torch.randperm(len(images), generator=g)[:PER_SET]] for _ in range(runs)]
    return model, inputs, concepts, randoms


def captum_tcav(model: torch.nn.Module, inputs: torch.Tensor, concepts: dict[str, torch.Tensor],
                randoms: list[torch.Tensor], folder: str) -> dict:  # fmt: skip
    from captum.concept import TCAV, Concept
    from torch.utils.data import DataLoader

    def concept(i: int, name: str, x: torch.Tensor) -> Concept:
        return Concept(i, name, DataLoader(list(x), batch_size=PER_SET, collate_fn=torch.stack))

    mine = [concept(i, n, x) for i, (n, x) in enumerate(concepts.items())]
    rand = [concept(len(mine) + i, f"random{i}", r) for i, r in enumerate(randoms)]
    sets = [[c, r] for c in mine for r in rand] + [[rand[0], r] for r in rand[1:]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        interpreter = TCAV(model, LAYERS, save_path=folder)
        return interpreter.interpret(inputs, sets, target=TARGET)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--method", default="sgd", choices=("sgd", "logistic", "fastcav"),
                        help="convlens's CAVs (captum's are SGD) [sgd]")  # fmt: skip
    args = parser.parse_args()
    model, inputs, concepts, randoms = job(args.runs)
    # both sides fit with scikit-learn: its import (2-3 s, once per process) is made before
    # either clock starts, not charged to whichever runs first
    import sklearn.linear_model  # noqa: F401

    start = time.perf_counter()
    result = tcav.tcav(model, {TARGET: inputs}, concepts, randoms, LAYERS, args.method)
    ours = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        captum_tcav(model, inputs, concepts, randoms, folder)
        theirs = time.perf_counter() - start
    info = machine_info()
    print(f"{info['processor']}, {info['threads']} threads, torch {info['torch']}")
    print(f"3 concepts x {args.runs} random runs x 2 layers: "
          f"convlens ({args.method}) {ours:.1f} s, "
          f"captum {theirs:.1f} s ({theirs / ours:.1f}x)")  # fmt: skip
    print(result.table(fashion_mnist.CLASSES))
    if args.json:
        atomic_write_json(args.json, {"machine": info, "runs": args.runs, "method": args.method,
                                      "convlens_s": ours, "captum_s": theirs,
                                      "ratio": theirs / ours})  # fmt: skip


if __name__ == "__main__":
    main()
