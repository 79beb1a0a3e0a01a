"""Units of a layer: their feature maps over the image, the most active ones, and the
ones that best match a region of the image (Problem 2 a-b).

Tensors in, tensors out; :mod:`convlens.render.unit_figures` draws them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from convlens.core.device import on_model_device
from convlens.core.hooks import activations
from convlens.core.precision import in_precision


@on_model_device
@in_precision("units")
def feature_maps(model: nn.Module, x: torch.Tensor, layer: str) -> torch.Tensor:
    """Output of ``layer`` for inputs ``x``: ``[N, C, h, w]`` (evaluation mode).

    Raises:
        ValueError: unknown layer, or a layer whose output is not ``[N, C, h, w]``.
    """
    if x.ndim != 4:
        raise ValueError(f"inputs must be [N, C, H, W], got shape {tuple(x.shape)}")
    _, acts = activations(model, x, layer)
    maps = acts[layer]
    if maps.ndim != 4:
        raise ValueError(
            f"layer {layer!r} outputs shape {tuple(maps.shape)}, not [N, C, h, w] feature "
            "maps; choose a convolutional layer or block"
        )
    return maps.float()


def upsample(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear upsampling of ``[N, U, h, w]`` maps to ``size`` (H, W).

    ``align_corners=False`` treats map cells and image pixels as areas: cell
    ``(i, j)`` of an ``h x w`` map over an ``H x W`` image covers pixels
    ``[i H/h, (i+1) H/h)``, and its value lands at the centre of that block.
    """
    return F.interpolate(maps, size=size, mode="bilinear", align_corners=False)


@dataclass(frozen=True)
class UnitMaps:
    """Feature maps of chosen units for a batch of images."""

    layer: str
    units: tuple[int, ...]
    maps: torch.Tensor  # [N, U, h, w] as the layer computes them
    upsampled: torch.Tensor  # [N, U, H, W] over the input image
    peaks: torch.Tensor  # [N, U] maximum of each map


def check_units(units: Sequence[int], channels: int, layer: str) -> list[int]:
    """``units`` as ints, after checking each is a unit of a ``channels``-unit layer.

    Raises:
        ValueError: no units, or one out of range (the message gives the range).
    """
    units = [int(u) for u in units]
    if not units:
        raise ValueError("no units given")
    bad = [u for u in units if not 0 <= u < channels]
    if bad:
        more = f" and {len(bad) - 10:,} more" if len(bad) > 10 else ""
        raise ValueError(
            f"units {bad[:10]}{more} out of range: layer {layer!r} has {channels} units "
            f"(0..{channels - 1})"
        )
    return units


@on_model_device
@in_precision("units")
def unit_maps(model: nn.Module, x: torch.Tensor, layer: str, units: Sequence[int]) -> UnitMaps:
    """Feature maps of ``units`` of ``layer``, also upsampled to the input size."""
    maps = feature_maps(model, x, layer)
    units = check_units(units, maps.shape[1], layer)
    chosen = maps[:, list(units)]
    return UnitMaps(
        layer=layer,
        units=tuple(units),
        maps=chosen,
        upsampled=upsample(chosen, (x.shape[2], x.shape[3])),
        peaks=chosen.amax(dim=(2, 3)),
    )


@dataclass(frozen=True)
class TopUnits:
    """The most active units of a layer for each image, best first."""

    layer: str
    units: torch.Tensor  # [N, top] unit indices
    scores: torch.Tensor  # [N, top] their mean or peak activation


@on_model_device
@in_precision("units")
def top_units(
    model: nn.Module, x: torch.Tensor, layer: str, top: int, by: str = "mean"
) -> TopUnits:
    """The ``top`` most active units of ``layer`` for each image.

    Args:
        by: ``"mean"`` ranks by spatial mean activation (what global average pooling
            passes on), ``"max"`` by peak activation.
    """
    if by not in ("mean", "max"):
        raise ValueError(f"`by` must be 'mean' or 'max', got {by!r}")
    return rank_units(feature_maps(model, x, layer), layer, top, by)


def rank_units(maps: torch.Tensor, layer: str, top: int, by: str = "mean") -> TopUnits:
    """:func:`top_units` from a layer's feature maps ``[N, C, h, w]`` already computed."""
    if not 1 <= top <= maps.shape[1]:
        raise ValueError(f"`top` must be in 1..{maps.shape[1]} for layer {layer!r}, got {top}")
    score = maps.mean((2, 3)) if by == "mean" else maps.amax((2, 3))
    best = score.topk(top, dim=1)
    return TopUnits(layer, best.indices, best.values)


def threshold_maps(upsampled: torch.Tensor, quantile: float) -> torch.Tensor:
    """Binary masks ``upsampled > T_u``, with ``T_u`` the ``quantile`` of unit ``u``'s
    upsampled activations over the image (Network Dissection's per-unit threshold,
    taken on one image instead of a data set). ``upsampled``: ``[U, H, W]``."""
    if not 0.0 < quantile < 1.0:
        raise ValueError(f"quantile must be in (0, 1), got {quantile}")
    flat = upsampled.reshape(upsampled.shape[0], -1)
    thresholds = torch.quantile(flat, quantile, dim=1)
    return upsampled > thresholds[:, None, None]


@dataclass(frozen=True)
class RegionMatch:
    """Units of a layer ranked by how well their active area matches a region."""

    layer: str
    units: torch.Tensor  # [U] unit indices, best first
    iou: torch.Tensor  # [U] intersection over union with the region
    masks: torch.Tensor  # [U, H, W] thresholded unit maps, same order
    quantile: float


@on_model_device
@in_precision("units")
def match_region(
    model: nn.Module,
    x: torch.Tensor,
    layer: str,
    region: torch.Tensor,
    quantile: float = 0.8,
) -> RegionMatch:
    """Rank all units of ``layer`` by IoU between ``region`` and their thresholded map.

    For each unit ``u`` the map is upsampled to the input, thresholded at its own
    ``quantile`` (so the top ``1 - quantile`` of its pixels are "on"), and scored with
    ``IoU = |on ∩ region| / |on ∪ region|``.

    Args:
        x: one image ``[1, C, H, W]``.
        region: boolean ``[H, W]`` mask in model-input pixels (see :func:`box_mask`).
        quantile: per-unit threshold quantile; 0.8 keeps a fifth of the image.
    """
    if x.ndim != 4 or x.shape[0] != 1:
        raise ValueError(f"match_region takes one image [1, C, H, W], got {tuple(x.shape)}")
    if region.shape != x.shape[2:]:
        raise ValueError(
            f"region mask is {tuple(region.shape)} but the model input is {tuple(x.shape[2:])}"
        )
    region = region.bool()
    if not region.any():
        raise ValueError("region mask is empty")
    maps = feature_maps(model, x, layer)
    up = upsample(maps, (x.shape[2], x.shape[3]))[0]
    on = threshold_maps(up, quantile)
    inter = (on & region).flatten(1).sum(1).float()
    union = (on | region).flatten(1).sum(1).float()
    iou = inter / union
    order = iou.argsort(descending=True, stable=True)
    return RegionMatch(layer, order, iou[order], on[order], quantile)


__all__ = [
    "RegionMatch",
    "TopUnits",
    "UnitMaps",
    "check_units",
    "feature_maps",
    "match_region",
    "rank_units",
    "threshold_maps",
    "top_units",
    "unit_maps",
    "upsample",
]
