"""Inference for any classifier: logits, predicted classes and top-1 accuracy in
evaluation mode, batched, with optional flip test-time augmentation."""

from __future__ import annotations

import torch
from torch import nn

from convlens.core.device import autocast, pass_batch
from convlens.core.hooks import channels_last_twin, eval_mode
from convlens.core.precision import reduced
from convlens.data import fashion_mnist as fm
from convlens.data.images import Preprocessing, normalize


def to_model_input(
    images: torch.Tensor, preprocessing: Preprocessing | None = None
) -> torch.Tensor:
    """Float inputs as they are; uint8 pixels ``[N, C, H, W]`` normalised with the model's
    ``preprocessing`` (``(x / 255 - mean) / std``), or FashionMNIST's statistics when it is
    ``None`` and the images have one channel.

    Raises:
        ValueError: uint8 images of several channels without ``preprocessing``.
    """
    if images.dtype != torch.uint8:
        return images
    if preprocessing is None or preprocessing == fm.PREPROCESSING:
        if images.ndim != 4 or images.shape[1] != 1:
            raise ValueError(
                f"uint8 images of shape {tuple(images.shape)} need the model's preprocessing "
                "(its mean and std) to be normalised; pass preprocessing=LoadedModel."
                "preprocessing, or normalised float inputs"
            )
        return fm.to_float(images)
    return normalize(images.float() / 255.0, preprocessing)


# images from which predict_logits runs a channels-last copy of the model on the CPU
MANY = 64


@torch.no_grad()
def predict_logits(
    model: nn.Module,
    images: torch.Tensor,
    *,
    tta: bool = False,
    batch_size: int | None = None,
    amp_dtype: torch.dtype | None = None,
    preprocessing: Preprocessing | None = None,
) -> torch.Tensor:
    """Logits ``[N, classes]`` in evaluation mode (the model's mode is restored), run
    ``batch_size`` images a pass (by default :func:`convlens.core.device.pass_batch`'s).
    On the CPU, from 64 images on, the passes run through a channels-last copy of the
    model: the logits may then differ from ``model(x)``'s in the last float bits.

    With ``tta`` the logits of each image and of its mirror image are averaged. uint8
    images are normalised as :func:`to_model_input` says; an empty batch gives
    ``[0, classes]``.
    """
    if images.ndim != 4:
        raise ValueError(f"images must be [N, C, H, W], got shape {tuple(images.shape)}")
    device = next(model.parameters()).device
    out = []
    with eval_mode(model):
        if images.shape[0] == 0:  # still run the model: its output gives the class count
            return model(to_model_input(images, preprocessing).to(device)).float().cpu()
        batch = pass_batch(images[0].numel(), device, batch_size)
        forward = model
        if device.type == "cpu" and images.shape[0] >= MANY:
            # a channels-last copy: fashion-cnn's test set with flip TTA in 11.8 s instead
            # of 18.3 in passes of 1,000 (benchmarks/predict_speed.py; the copy costs what
            # a few images do)
            forward = channels_last_twin(model)
        for i in range(0, images.shape[0], batch):
            x = to_model_input(images[i : i + batch], preprocessing).to(device)
            if device.type == "cpu":
                x = x.contiguous(memory_format=torch.channels_last)
            # an explicit amp_dtype (training's evaluation) wins over the analyses' setting
            amp = autocast(device, amp_dtype) if amp_dtype else reduced("predict", device)
            with amp:
                logits = forward(x).float()
                if tta:
                    logits = 0.5 * (logits + forward(x.flip(3)).float())
            out.append(logits.cpu())
    return torch.cat(out)


def get_prediction(
    model: nn.Module,
    images: torch.Tensor,
    *,
    tta: bool = False,
    amp_dtype: torch.dtype | None = None,
    preprocessing: Preprocessing | None = None,
    batch_size: int | None = None,
) -> torch.Tensor:
    """Predicted class indices (int64 ``[N]``) for a batch of images: uint8 pixels
    (normalised as :func:`to_model_input` says) or normalised float inputs."""
    logits = predict_logits(
        model,
        images,
        tta=tta,
        amp_dtype=amp_dtype,
        preprocessing=preprocessing,
        batch_size=batch_size,
    )
    return logits.argmax(1)


def evaluate(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    tta: bool = False,
    amp_dtype: torch.dtype | None = None,
    preprocessing: Preprocessing | None = None,
    batch_size: int | None = None,
) -> float:
    """Top-1 accuracy in [0, 1] of ``model`` on ``images`` against ``labels``, run
    ``batch_size`` images at a time (see :func:`predict_logits`)."""
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"{images.shape[0]} images but {labels.shape[0]} labels")
    if images.shape[0] == 0:
        raise ValueError("cannot evaluate on an empty set of images")
    pred = get_prediction(
        model,
        images,
        tta=tta,
        amp_dtype=amp_dtype,
        preprocessing=preprocessing,
        batch_size=batch_size,
    )
    return (pred == labels).float().mean().item()


__all__ = [
    "evaluate",
    "get_prediction",
    "predict_logits",
    "to_model_input",
]
