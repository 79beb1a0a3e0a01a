"""Arguments and helpers shared by the analysis subcommands."""

from __future__ import annotations

import argparse

import torch

from convlens import images, models, units


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


def region_mask(
    args: argparse.Namespace, inputs: images.Inputs, loaded: models.LoadedModel
) -> torch.Tensor | None:
    """The ``--region X0,Y0,X1,Y1`` box or ``--mask FILE`` of the first image as a boolean
    mask over the model input, or ``None`` when neither is given."""
    if args.region:
        try:
            x0, y0, x1, y1 = (float(v) for v in args.region.split(","))
        except ValueError as e:
            raise ValueError(f"--region takes four numbers x0,y0,x1,y1, got {args.region!r}") from e
        box = images.transform_box((x0, y0, x1, y1), inputs.sizes[0], loaded.preprocessing)
        return units.box_mask(box, (inputs.x.shape[2], inputs.x.shape[3]))
    if args.mask:
        return images.load_mask(args.mask, inputs.sizes[0], loaded.preprocessing)
    return None


def input_size(loaded: models.LoadedModel) -> tuple[int, int]:
    p = loaded.preprocessing
    s = int(p.get("size") or p.get("crop") or 224)
    return s, s
