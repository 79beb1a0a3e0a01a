"""Convolution kernels as pictures: normalisation and tiling (Problem 1).

Tensors in, tensors out; :mod:`convlens.render.unit_figures` draws them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from convlens.core.hooks import get_layer
from convlens.core.tensors import minmax_scale


def normalize_tensor(t: torch.Tensor, per: str = "filter", eps: float = 1e-12) -> torch.Tensor:
    """Map values to [0, 1] for display: ``(t - min) / (max - min)``.

    Args:
        t: a kernel tensor ``[O, I, kH, kW]`` (or any tensor; dim 0 indexes filters).
        per: ``"filter"`` takes min and max over each ``t[o]`` separately, so every
            filter uses the full range; ``"layer"`` takes them over the whole tensor,
            so filters stay comparable with each other.
        eps: ranges below this count as constant.

    Returns:
        A new float tensor of ``t``'s shape (``t`` is not modified). A constant filter
        (or layer) maps to 0.5 everywhere.

    Raises:
        ValueError: unknown ``per``, or an empty tensor.
    """
    if per not in ("filter", "layer"):
        raise ValueError(f"per must be 'filter' or 'layer', got {per!r}")
    if t.numel() == 0:
        raise ValueError("cannot normalise an empty tensor")
    start = 0 if per == "layer" or t.ndim == 0 else 1
    return minmax_scale(t, start, constant=0.5, eps=eps)


@dataclass(frozen=True)
class FilterTiles:
    """Normalised kernels ready to draw.

    ``tiles`` is ``[O, 3, kH, kW]`` when ``rgb`` (each filter one colour tile) and
    ``[O, I, kH, kW]`` otherwise (each (filter, input channel) one grayscale tile).
    """

    tiles: torch.Tensor
    rgb: bool
    layer: str
    weight_shape: tuple[int, ...]
    filters: tuple[int, ...]  # output filter indices shown
    in_channels: tuple[int, ...]  # input channel indices shown (empty when rgb)


def conv_weight(model: nn.Module, layer: str) -> torch.Tensor:
    """The weight ``[O, I, kH, kW]`` of the convolution ``layer``.

    Raises:
        ValueError: unknown layer, or not a 2-d convolution.
    """
    module = get_layer(model, layer)
    if not isinstance(module, nn.Conv2d):
        convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
        raise ValueError(
            f"layer {layer!r} is a {type(module).__name__}, not a Conv2d; conv layers: "
            + ", ".join(convs[:30])
        )
    return module.weight.detach()


def filter_tiles(
    model: nn.Module,
    layer: str,
    *,
    filters: Sequence[int] | None = None,
    in_channels: Sequence[int] | None = None,
    max_filters: int = 64,
    max_in_channels: int = 8,
    per: str = "filter",
    rgb: bool | None = None,
) -> FilterTiles:
    """Kernels of a conv layer, normalised for display.

    A layer with 3 input channels (a first layer on RGB images) is shown in colour:
    its input channels *are* colours. Any other layer is shown per input channel
    in grayscale, never mixing input channels into colour.

    Args:
        filters: output filters to show (default: the first ``max_filters``).
        in_channels: input channels to show for grayscale grids (default: the first
            ``max_in_channels``).
        per: normalisation, see :func:`normalize_tensor` (``"filter"`` normalises each
            shown filter over the channels shown).
        rgb: force colour (needs 3 input channels) or grayscale; default: colour iff
            the layer has 3 input channels.
    """
    w = conv_weight(model, layer)
    o, i = w.shape[:2]
    chosen = list(filters) if filters is not None else list(range(min(o, max_filters)))
    bad = [f for f in chosen if not 0 <= f < o]
    if bad:
        raise ValueError(f"filters {bad} out of range: layer {layer!r} has {o} filters")
    use_rgb = (i == 3) if rgb is None else rgb
    if use_rgb and i != 3:
        raise ValueError(f"layer {layer!r} has {i} input channels; colour tiles need 3")
    if use_rgb:
        sub = w[chosen]
        channels: list[int] = []
    else:
        channels = (
            list(in_channels) if in_channels is not None else list(range(min(i, max_in_channels)))
        )
        bad = [c for c in channels if not 0 <= c < i]
        if bad:
            raise ValueError(f"input channels {bad} out of range: layer {layer!r} has {i}")
        sub = w[chosen][:, channels]
    return FilterTiles(
        tiles=normalize_tensor(sub, per).cpu(),  # a picture: on the CPU whatever the model
        rgb=use_rgb,
        layer=layer,
        weight_shape=tuple(w.shape),
        filters=tuple(chosen),
        in_channels=tuple(channels),
    )


__all__ = [
    "FilterTiles",
    "conv_weight",
    "filter_tiles",
    "normalize_tensor",
]
