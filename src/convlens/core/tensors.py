"""Small tensor helpers shared by the interpretation methods."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

BASELINES = ("zeros", "blur", "mean")


def minmax_scale(
    t: torch.Tensor, start_dim: int, constant: float = 0.0, eps: float = 0.0
) -> torch.Tensor:
    """``(t - min) / (max - min)``, the min and max taken over dims ``start_dim..`` of
    each slice before them (``start_dim=0``: the whole tensor; ``1``: each ``t[i]``;
    ``t.ndim - 2``: each 2-D map). A slice whose range is ``<= eps`` is constant and
    becomes ``constant`` everywhere: 0 for saliency maps (no evidence anywhere, as
    torchcam and pytorch-grad-cam do), 0.5 for kernels drawn as grey tiles.

    Returns a new float tensor of ``t``'s shape; ``t`` is not modified.
    """
    x = t.detach().float()
    flat = x.reshape(*x.shape[:start_dim], -1)
    lo = flat.amin(-1, keepdim=True)
    span = flat.amax(-1, keepdim=True) - lo
    flat_const = span <= eps
    out = (flat - lo) / torch.where(flat_const, torch.ones_like(span), span)
    out = torch.where(flat_const, torch.full_like(out, constant), out)
    return out.reshape(x.shape)


def baseline_image(x: torch.Tensor, kind: str = "zeros") -> torch.Tensor:
    """What removed pixels become: ``zeros`` (the zero input, which is the data set's
    mean colour after normalisation), ``blur`` (a Gaussian blur of the image, sigma =
    side / 16) or ``mean`` (each image's own mean per channel)."""
    if kind == "zeros":
        return torch.zeros_like(x)
    if kind == "mean":
        return x.mean((2, 3), keepdim=True).expand_as(x).clone()
    if kind == "blur":
        sigma = max(x.shape[2], x.shape[3]) / 16
        radius = max(1, math.ceil(3 * sigma))
        t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
        k = torch.exp(-(t**2) / (2 * sigma**2))
        k = k / k.sum()
        c = x.shape[1]
        padded = F.pad(x, (radius, radius, radius, radius), mode="replicate")
        rows = F.conv2d(padded, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
        return F.conv2d(rows, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    raise ValueError(f"`baseline` must be one of {', '.join(BASELINES)}, got {kind!r}")


def counts(values: torch.Tensor, length: int) -> torch.Tensor:
    """How often each of ``0 .. length-1`` occurs in ``values`` (int64, ``[length]``).
    ``torch.bincount`` on the CPU; elsewhere a scatter-add, because bincount on a GPU
    reads the largest value back to the host first, a wait on every call."""
    flat = values.flatten()
    if flat.device.type == "cpu":
        return torch.bincount(flat, minlength=length)
    out = torch.zeros(length, dtype=torch.long, device=flat.device)
    return out.index_add_(0, flat, torch.ones_like(flat, dtype=torch.long))


__all__ = [
    "BASELINES",
    "baseline_image",
    "counts",
    "minmax_scale",
]
