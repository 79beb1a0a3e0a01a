"""Arguments and helpers shared by the subcommands.

Subcommand modules import only the standard library and this module at start-up, so
that ``convlens --help`` answers at once; torch and the analysis modules are imported
inside each command's ``run``.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from convlens import models
    from convlens.data import images

MODEL_HELP = (
    "fashion-cnn, a run directory or checkpoint, places365-resnet18|50, "
    "places365-wideresnet18, or torchvision:NAME"
)
IMAGE_HELP = "an image file, or test:N for FashionMNIST test image N (28x28 models)"


def add_model_args(p: argparse.ArgumentParser) -> None:
    """MODEL, ``--weights`` and ``--data-dir``: the same for every command that loads a
    model and reads images."""
    p.add_argument("model", metavar="MODEL", help=MODEL_HELP)
    p.add_argument(
        "--weights",
        metavar="PATH",
        help="checkpoint file for places365-*/torchvision:* (offline use); "
        "'none' for random torchvision weights",
    )
    p.add_argument("--data-dir", help="folder holding the FashionMNIST .gz files (for test:N)")


def add_image_args(p: argparse.ArgumentParser, nargs: str | None = None) -> None:
    """The IMAGE argument: one (``nargs=None``) or several (``'+'``, ``'*'``)."""
    if nargs is None:
        p.add_argument("image", metavar="IMAGE", help=IMAGE_HELP)
    else:
        p.add_argument("images", nargs=nargs, metavar="IMAGE", help=IMAGE_HELP + "; several")


def load_model(args: argparse.Namespace) -> models.LoadedModel:
    from convlens import models

    return models.load(args.model, weights=args.weights)


def load_inputs(
    args: argparse.Namespace, loaded: models.LoadedModel, specs: list[str]
) -> images.Inputs:
    """The images ``specs`` (files or ``test:N``) preprocessed for ``loaded``."""
    from convlens.data import images

    return images.load_inputs(specs, loaded.preprocessing, args.data_dir)


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
    from convlens.data import images
    from convlens.interpret import units

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
