"""Arguments and helpers shared by the analysis subcommands."""

from __future__ import annotations

import argparse

from convlens import models


def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "model",
        metavar="MODEL",
        help="fashion-cnn, a run directory or checkpoint, places365-resnet18|50, "
        "places365-wideresnet18, or torchvision:NAME",
    )
    p.add_argument(
        "--weights",
        metavar="PATH",
        help="checkpoint file for places365-*/torchvision:* (offline use); "
        "'none' for random torchvision weights",
    )


def load_model(args: argparse.Namespace) -> models.LoadedModel:
    return models.load(args.model, weights=args.weights)


def parse_ints(text: str, name: str) -> list[int]:
    try:
        return [int(t) for t in text.replace(",", " ").split()]
    except ValueError as e:
        raise ValueError(f"{name}: expected integers, got {text!r}") from e


def input_size(loaded: models.LoadedModel) -> tuple[int, int]:
    p = loaded.preprocessing
    s = int(p.get("size") or p.get("crop") or 224)
    return s, s
