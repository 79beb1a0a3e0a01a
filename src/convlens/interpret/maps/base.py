"""The base of the map family: one class per method, each overriding how it weights a
layer's channels (:meth:`ActivationMapMethod.channel_weights`) or, for the pixel
attributions, how it attributes (:class:`~convlens.interpret.maps.pixel.PixelAttribution`),
and the :class:`ClassMaps` every member returns.

A map of class ``c`` is ``act(sum_k alpha[c, k] A[k])`` for a layer's channels ``A``;
it is min-max scaled to [0, 1] (``(m - min) / (max - min)``) and upsampled to the input.
Members register in :mod:`convlens.interpret.maps.registry`, which gives their names.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from convlens.core.device import model_device, to_device
from convlens.core.hooks import capture, eval_mode, get_layer
from convlens.core.precision import reduced
from convlens.core.tensors import minmax_scale
from convlens.interpret.heads import GapHead, default_layer
from convlens.interpret.maps import registry


class FlatMapsWarning(UserWarning):
    """The layer asked for has 1x1 outputs: its maps cannot show where anything is."""


def normalize_maps(maps: torch.Tensor) -> torch.Tensor:
    """Min-max scale each map of ``[..., h, w]`` to [0, 1]: ``(m - min) / (max - min)``;
    a constant map becomes zeros. Returns a new tensor."""
    return minmax_scale(maps, maps.ndim - 2, constant=0.0)


@dataclass(frozen=True)
class ClassMaps:
    """Activation maps of the top classes for a batch of images."""

    method: str
    layer: str
    logits: torch.Tensor  # [N, K]
    probs: torch.Tensor  # [N, K] softmax
    class_indices: torch.Tensor  # [N, T] the classes mapped, most probable first
    maps: torch.Tensor  # [N, T, h, w] raw maps at the layer's resolution
    normalized: torch.Tensor  # [N, T, h, w] min-max scaled to [0, 1]
    upsampled: torch.Tensor  # [N, T, H, W] normalised maps, bilinear to the input size


@dataclass(frozen=True)
class Site:
    """Where a method reads the network: the layer, and the GAP head when CAM needs it."""

    layer: str
    head: GapHead | None = None


class ActivationMapMethod:
    """Weighted sums of a layer's channels, one per target class:
    ``map_c = act(sum_k alpha[c, k] A[k])``. Subclasses define ``alpha``
    (:meth:`channel_weights`) and whether the sum passes through a ReLU.

    A call is a short pipeline: :meth:`locate` the layer, :meth:`forward` to get the
    logits and features, :meth:`channel_weights`, then weight, rectify and normalise.
    Nothing is kept on the object between calls."""

    relu = False

    def __init__(self, model: nn.Module, layer: str | None = None) -> None:
        self.model = model
        self.layer = layer

    @property
    def name(self) -> str:
        """The method's name in the registry."""
        return registry.name_of(type(self))

    def locate(self, x: torch.Tensor) -> Site:
        """The layer to read: the given one, else the GAP head's feature layer, else the
        last convolutional module (see :func:`last_conv_module`)."""
        if self.layer is not None:
            get_layer(self.model, self.layer)
            return Site(self.layer)
        return Site(default_layer(self.model, x))

    def channel_weights(
        self, site: Site, features: torch.Tensor, logits: torch.Tensor, classes: torch.Tensor
    ) -> torch.Tensor:
        """``alpha``: ``[N, T, C]`` weights of each channel for each target class, from
        the ``features`` and ``logits`` that :meth:`forward` returned."""
        raise NotImplementedError

    def weighted_maps(
        self,
        x: torch.Tensor,
        site: Site,
        features: torch.Tensor,
        logits: torch.Tensor,
        classes: torch.Tensor,
    ) -> torch.Tensor:
        """``[N, T, h, w]``: ``sum_k alpha[c, k] A[k]``, with per-position weights when
        :meth:`channel_weights` gives ``[N, T, C, h, w]`` (LayerCAM, HiResCAM)."""
        alpha = self.channel_weights(site, features, logits, classes)
        if alpha.ndim == 3:
            alpha = alpha[..., None, None]
        # multiply, then sum over channels: the order both reference libraries use, so
        # that float rounding matches theirs too (an einsum differs by up to 1e-4 for
        # Grad-CAM++, whose weights span many orders of magnitude)
        return (alpha * features.detach()[:, None]).sum(2)

    def forward(self, x: torch.Tensor, layer: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits, features)`` of ``x``; the features keep their graph if needed."""
        with eval_mode(self.model), torch.no_grad(), capture(self.model, layer) as store:
            logits = self.model(x)
        return logits.float(), store[layer].float()

    def __call__(
        self, x: torch.Tensor, top: int = 5, classes: torch.Tensor | None = None
    ) -> ClassMaps:
        """Maps for the ``top`` most probable classes of each image (or for ``classes``,
        ``[N, T]``), at the layer's resolution and upsampled to the input's. They are
        computed where the model is and come back to ``x``'s device."""
        device = model_device(self.model)
        if x.device != device:
            moved = None if classes is None else classes.to(device)
            return to_device(self(x.to(device), top, moved), x.device)
        if x.ndim != 4:
            raise ValueError(f"inputs must be [N, C, H, W], got shape {tuple(x.shape)}")
        with reduced(self.name, device, registry.method(self.name).bf16):
            return self._maps(x, top, classes)

    def _maps(self, x: torch.Tensor, top: int, classes: torch.Tensor | None) -> ClassMaps:
        site = self.locate(x)
        layer = site.layer
        logits, features = self.forward(x, layer)
        if features.ndim != 4:
            raise ValueError(
                f"layer {layer!r} outputs shape {tuple(features.shape)}, not [N, C, h, w]"
            )
        if features.shape[2] * features.shape[3] == 1:
            warnings.warn(
                FlatMapsWarning(
                    f"layer {layer!r} has 1x1 maps, one value per image: its maps are blank "
                    f"after scaling; choose a layer with spatial maps, such as "
                    f"{default_layer(self.model, x)!r} (`layer`)"
                ),
                stacklevel=2,
            )
        k = logits.shape[1]
        if classes is None:
            if not 1 <= top <= k:
                raise ValueError(f"top must be in 1..{k}, got {top}")
            classes = logits.topk(top, dim=1).indices
        elif classes.ndim != 2 or classes.shape[0] != x.shape[0]:
            raise ValueError(f"classes must be [N, T] with N={x.shape[0]}")
        elif classes.numel() and not 0 <= int(classes.min()) <= int(classes.max()) < k:
            raise ValueError(f"class indices must be in 0..{k - 1}, got {classes.tolist()}")
        maps = self.weighted_maps(x, site, features, logits, classes)
        if self.relu:
            maps = maps.clamp_min(0)
        normalized = normalize_maps(maps)
        upsampled = F.interpolate(
            normalized, size=x.shape[2:], mode="bilinear", align_corners=False
        ).clamp(0, 1)
        return ClassMaps(
            method=self.name,
            layer=layer,
            logits=logits.detach(),
            probs=logits.detach().softmax(1),
            class_indices=classes,
            maps=maps,
            normalized=normalized,
            upsampled=upsampled,
        )


__all__ = [
    "ActivationMapMethod",
    "ClassMaps",
    "FlatMapsWarning",
    "Site",
    "normalize_maps",
]
