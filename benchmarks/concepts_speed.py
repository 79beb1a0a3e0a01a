"""Concept discovery on fashion-cnn (issue 41): all 10 classes over the 10,000 FashionMNIST
test images, k=10 per class, at ``features`` (goal: at most 60 s on 2 cores), with what
a user reads to judge the concepts: each class's reconstruction error, its most important
concept's C-Insertion beside a random direction's, and the C-Deletion / C-Insertion areas.

The timed call is the API's :func:`~convlens.interpret.concepts.discover.concepts`:
activations, one NMF per class, the coefficient maps, Sobol importance over the first
``--importance-images`` images of each class, gradient x concept, the curves and the
exemplars. The feature visualisations the CLI adds (``--visualize-steps``) are timed
apart.

    uv run python benchmarks/concepts_speed.py [--importance-images 500] [--json F]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from convlens import models
from convlens.core.device import machine_info
from convlens.core.fileio import atomic_write_json
from convlens.data import fashion_mnist
from convlens.interpret.concepts import discover
from convlens.interpret.objectives import direction
from convlens.interpret.visualize import VisualizeSettings, visualize


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--importance-images", type=int, default=500)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--patches", type=int)
    parser.add_argument("--visualize-steps", type=int, default=128)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    loaded = models.load("fashion-cnn")
    model = loaded.model.eval()
    data = fashion_mnist.load_fashion_mnist("test")
    x = fashion_mnist.to_float(data.images)
    settings = discover.ConceptSettings(
        k=args.k, patches=args.patches, importance_images=args.importance_images
    )
    start = time.perf_counter()
    found = discover.concepts(model, x, "features", data.labels, list(range(10)), settings)
    seconds = time.perf_counter() - start
    start = time.perf_counter()
    if args.visualize_steps:
        banks = torch.cat([g.bank for g in found.groups])
        visualize(model, direction("features", banks), loaded.preprocessing,
                  VisualizeSettings(steps=args.visualize_steps))  # fmt: skip
    pictures = time.perf_counter() - start
    info = machine_info()
    print(f"{info['processor']}, {info['threads']} threads, torch {info['torch']}")
    steps = args.visualize_steps
    print(f"10 classes x k={args.k} over {len(x)} images: {seconds:.1f} s "
          f"(+ {pictures:.1f} s for {10 * args.k} pictures of {steps} steps)")  # fmt: skip
    rows = []
    for g in found.groups:
        name = fashion_mnist.CLASSES[g.group or 0]
        first, rand = float(g.insertion[0, 1]), float(g.random_insertion[0])
        rows.append({"class": name, "error": g.error, "first_concept": first,
                     "random_direction": rand, "c_deletion": float(g.deletion[0].mean()),
                     "c_insertion": float(g.insertion[0].mean())})  # fmt: skip
        row = rows[-1]
        print(f"{name:12s} error {g.error:.3f}  first concept {first:.3f} vs random {rand:.3f}  "
              f"C-Del {row['c_deletion']:.3f}  C-Ins {row['c_insertion']:.3f}")  # fmt: skip
    beats = sum(r["first_concept"] > r["random_direction"] for r in rows)
    print(f"the most important concept beats a random direction for {beats} of 10 classes")
    if args.json:
        atomic_write_json(args.json, {
            "machine": info, "seconds": seconds, "pictures_seconds": pictures,
            "settings": vars(args) | {"json": str(args.json)}, "classes": rows, "beats": beats,
        })  # fmt: skip


if __name__ == "__main__":
    main()
