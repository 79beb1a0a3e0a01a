"""Would test-time augmentation beyond flips help? Scores finished runs' models on the
validation and test splits with several test-time averages of their logits.

- ``none``: the image alone.
- ``flip``: the image and its mirror image (what ``tta=True`` does; the default).
- ``flip+diag``: airbench's second level. Half the weight on ``flip``, half on the
  flipped and unflipped image moved by one pixel up-left and one down-right.
- ``flip+cross``: ``flip`` with weight 2, and the image moved one pixel up, down, left
  and right, each with its mirror image, with weight 1/2.

Moved images are filled with black (zero) pixels, as FashionMNIST's background is.
Prints validation / test top-1 per run and the means; choose on validation.

    uv run python benchmarks/tta_compare.py runs/bench/default-seed0 runs/bench/default-seed1 \\
        runs/bench/default-seed2
"""

from __future__ import annotations

import argparse
import statistics

import torch
import torch.nn.functional as F

from convlens import models
from convlens.core.device import autocast_dtype
from convlens.data import fashion_mnist as data
from convlens.inference import predict_logits

# (rows down, columns right) of each moved copy
SHIFTS = {
    "up-left": (-1, -1),
    "down-right": (1, 1),
    "up": (-1, 0),
    "down": (1, 0),
    "left": (0, -1),
    "right": (0, 1),
}


def shifted(images: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """uint8 ``[N, 1, H, W]`` moved ``dy`` pixels down and ``dx`` right, zero-filled."""
    h, w = images.shape[-2:]
    padded = F.pad(images, (1, 1, 1, 1))
    return padded[:, :, 1 - dy : 1 - dy + h, 1 - dx : 1 - dx + w]


def top1_by_tta(
    model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor
) -> dict[str, float]:
    amp = autocast_dtype("auto", torch.device("cpu"))  # as the runs were evaluated
    logits = {"none": predict_logits(model, images, amp_dtype=amp)}
    mirrored = {"none": predict_logits(model, images.flip(3), amp_dtype=amp)}
    for name, (dy, dx) in SHIFTS.items():
        moved = shifted(images, dy, dx)
        logits[name] = predict_logits(model, moved, amp_dtype=amp)
        mirrored[name] = predict_logits(model, moved.flip(3), amp_dtype=amp)
    pair = {k: logits[k] + mirrored[k] for k in logits}  # each view with its mirror image
    averages = {
        "none": logits["none"],
        "flip": pair["none"],
        "flip+diag": 0.5 * pair["none"] + 0.25 * (pair["up-left"] + pair["down-right"]),
        "flip+cross": 2 * pair["none"]
        + 0.5 * sum(pair[k] for k in ("up", "down", "left", "right")),
    }
    return {k: 100 * (v.argmax(1) == labels).float().mean().item() for k, v in averages.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="finished run directories (or model files)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    try:  # every model first, so that a bad path fails before any scoring
        loaded_runs = [(run, models.load(run)) for run in args.runs]
    except ValueError as e:
        parser.error(str(e))
    train = data.load_fashion_mnist("train")
    test = data.load_fashion_mnist("test")
    rows = []
    for run, loaded in loaded_runs:
        model = loaded.model
        # the validation split the run held out (training splits with seed 0)
        val_size = loaded.config.val_size if loaded.config else 10_000
        _, val = data.train_val_split(train, val_size, seed=0)
        scores = {
            split: top1_by_tta(model, ds.images, ds.labels)
            for split, ds in (("val", val), ("test", test))
        }
        rows.append(scores)
        print(
            run,
            "  ".join(f"{k} {scores['val'][k]:.2f}/{scores['test'][k]:.2f}" for k in scores["val"]),
        )
    print("mean validation / test top-1 over the runs:")
    for k in rows[0]["val"]:
        val_mean = statistics.mean(r["val"][k] for r in rows)
        test_mean = statistics.mean(r["test"][k] for r in rows)
        print(f"  {k:11s} {val_mean:.2f} / {test_mean:.2f}")


if __name__ == "__main__":
    main()
