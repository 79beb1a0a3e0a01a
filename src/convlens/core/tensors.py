"""Small tensor helpers shared by the interpretation methods."""

from __future__ import annotations

import torch


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
