"""Where a network's head starts, and which layer an analysis reads when none is named.

A global-average-pooling + linear head with features ``A`` (``[C, h, w]``), weights
``W`` (``[K, C]``) and bias ``b`` computes::

    logit_c = sum_k W[c, k] * mean_ij A[k, i, j] + b_c

:func:`find_gap_head` finds such a head numerically (for any forward function), and
:func:`default_layer` is the one rule every command, the API and the explorer use for a
layer that is not named. CAM (:mod:`convlens.interpret.maps.cam`), ablation and the
unit analyses build on these.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from convlens.core.device import model_device, on_model_device
from convlens.core.hooks import eval_mode, get_layer, hooked, recording
from convlens.core.precision import full


@dataclass(frozen=True)
class GapHead:
    """Where a network's global-average-pooling + linear head starts.

    ``layer`` is the module whose output ``[N, C, h, w]`` is averaged and fed to the
    linear layer ``fc`` (``weight`` ``[K, C]``, ``bias`` ``[K]`` or ``None``).
    """

    layer: str
    fc: str
    weight: torch.Tensor
    bias: torch.Tensor | None


class NotGapHeadError(ValueError):
    """The model does not end in global average pooling followed by one linear layer.

    ``reason`` says why; the message adds what to do instead (by default: Grad-CAM, which
    is what a CAM user wants; callers for whom another fix helps re-raise with theirs).
    """

    def __init__(
        self, reason: str, fix: str = "use Grad-CAM (`method` gradcam) on a convolutional layer"
    ) -> None:
        super().__init__(f"{reason}; {fix}")
        self.reason = reason


def _last_linear(model: nn.Module) -> tuple[str, nn.Linear]:
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise NotGapHeadError(
            f"{type(model).__name__} has no nn.Linear layer, so it has no GAP + linear head"
        )
    return linears[-1]


@torch.no_grad()
def find_gap_head(model: nn.Module, x: torch.Tensor, layer: str | None = None) -> GapHead:
    """Find (or check) the layer whose global average feeds the final linear layer, or,
    for a head of 1x1 convolutions followed by global pooling (SqueezeNet), the layer of
    class maps whose global average is the logits (see :func:`class_map_head`).

    The check is numerical, so it holds for any forward function: with ``model`` in
    evaluation mode on ``x``, the last ``nn.Linear`` must produce the logits, and its
    input must equal the spatial mean of ``layer``'s output. Without ``layer`` the
    last module (in execution order) whose output passes this test is chosen, which
    is the outermost one when several return the same tensor (``layer4`` of a ResNet,
    ``features`` of :class:`~convlens.models.FashionCNN`).

    Raises:
        NotGapHeadError: the head is something else (e.g. VGG's pooled 7x7 grid and
            three linear layers); the message suggests Grad-CAM.
        ValueError: unknown ``layer``.
    """
    x = x.to(model_device(model))  # a probe: its answer is the model's own
    if layer is not None:
        get_layer(model, layer)
    try:
        return _linear_head(model, x, layer)
    except NotGapHeadError as linear_error:
        try:
            return class_map_head(model, x, layer)
        except NotGapHeadError:
            raise linear_error from None


def _linear_head(model: nn.Module, x: torch.Tensor, layer: str | None) -> GapHead:
    """The GAP + ``nn.Linear`` head of :func:`find_gap_head`."""
    fc_name, fc = _last_linear(model)
    x = x[:1]
    seen: list[tuple[str, torch.Tensor, int]] = []
    shapes: dict[str, tuple[int, ...]] = {}
    fc_io: dict[str, torch.Tensor] = {}

    def keep(name: str, out: torch.Tensor) -> None:
        shapes[name] = tuple(out.shape)
        if out.ndim == 4 and out.shape[1] == fc.in_features:
            seen.append((name, out.detach().float().mean((2, 3)), out.shape[2] * out.shape[3]))

    def fc_hook(_m: nn.Module, inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        fc_io["in"], fc_io["out"] = inp[0].detach().float(), out.detach().float()

    watched = None if layer is None else [layer]
    # the test is exact to float rounding: the probe runs in fp32 whatever the precision
    with recording(model, keep, watched), hooked([(fc, fc_hook)]), eval_mode(model), full(x.device):
        logits = model(x).float()

    if "out" not in fc_io or fc_io["out"].shape != logits.shape or not _close(fc_io["out"], logits):
        raise NotGapHeadError(
            f"the last linear layer {fc_name!r} does not produce the model's output, so "
            "the head is not global average pooling + one linear layer"
        )
    pooled = fc_io["in"].reshape(1, -1)
    # Only a map with more than one position is a CAM feature layer: a pooled 1x1 output
    # also averages to the FC input, but its "maps" are single pixels.
    for name, mean, positions in reversed(seen):
        if positions > 1 and _close(mean, pooled):
            bias = fc.bias.detach().float().clone() if fc.bias is not None else None
            return GapHead(name, fc_name, fc.weight.detach().float().clone(), bias)
    pooled_only = next(
        (n for n, mean, p in reversed(seen) if p == 1 and _close(mean, pooled)), None
    )
    if pooled_only is not None and layer is None:
        raise NotGapHeadError(
            f"the input of {fc_name!r} is the 1x1 output of {pooled_only!r}, which is not "
            "the plain global average of a spatial map (something after the pooling, such "
            "as ConvNeXt's LayerNorm, changes it), so the logits are not linear in the "
            "pooled features and CAM does not apply"
        )
    if layer is not None:  # say what the named layer gives instead
        got = f"{list(shapes[layer])} output" if layer in shapes else "output (it did not run)"
        where = f"layer {layer!r}'s {got}"
    else:
        where = f"any layer's [N, {fc.in_features}, h, w] output (h x w > 1)"
    raise NotGapHeadError(
        f"the input of {fc_name!r} ([N, {fc.in_features}]) is not the global average of "
        f"{where}, so the head is not global average pooling + one linear layer and CAM "
        "does not apply"
    )


@torch.no_grad()
def class_map_head(model: nn.Module, x: torch.Tensor, layer: str | None = None) -> GapHead:
    """A head that makes one map per class and averages it: SqueezeNet's 1x1 convolution
    (and ReLU) then global pooling. The last module whose ``[N, K, h, w]`` output (h x w
    > 1) has the logits as its spatial mean is the feature layer, with identity weights,
    so its channel ``c`` is the CAM of class ``c`` and ``mean(map_c) = logit_c``.

    Raises:
        NotGapHeadError: no such layer (or ``layer`` is not one).
    """
    x = x.to(model_device(model))  # a probe: its answer is the model's own
    x = x[:1]
    maps: list[tuple[str, torch.Tensor]] = []

    def keep(name: str, out: torch.Tensor) -> None:
        if out.ndim == 4 and out.shape[2] * out.shape[3] > 1:
            maps.append((name, out.detach().float().mean((2, 3))))

    watched = None if layer is None else [layer]
    with recording(model, keep, watched), eval_mode(model), full(x.device):
        logits = model(x).float()
    if logits.ndim == 2:
        for name, mean in reversed(maps):
            if _close(mean, logits):
                k = logits.shape[1]
                return GapHead(name, name, torch.eye(k), None)
    raise NotGapHeadError(
        "no layer's global average is the model's output, so the head is not global "
        "average pooling of class maps"
    )


@on_model_device
@torch.no_grad()
def default_layer(model: nn.Module, x: torch.Tensor) -> str:
    """The layer convlens reads when none is named: the one whose global average feeds
    the final linear layer, else the last convolutional module with spatial maps.

    One rule for every command, the API and the explorer: it depends on the input's
    shape only (``x`` is replaced by a seeded random probe of that shape; a blank image
    can make unrelated layers look alike)."""
    probe = input_probe(x)
    try:
        return find_gap_head(model, probe).layer
    except NotGapHeadError:
        return last_conv_module(model, probe)


def input_probe(x: torch.Tensor) -> torch.Tensor:
    """A seeded random input of one image of ``x``'s shape, on its device and dtype."""
    g = torch.Generator().manual_seed(0)  # drawn on the CPU: the same probe on any device
    return torch.randn(1, *x.shape[1:], generator=g, device="cpu").to(x.device, x.dtype)


@on_model_device
def last_conv_module(model: nn.Module, x: torch.Tensor) -> str:
    """The last module, in execution order, that contains (or is) an ``nn.Conv2d`` and
    returns ``[N, C, h, w]`` maps of more than one position: ``layer4`` of a ResNet,
    ``features`` of a VGG or a ConvNeXt (whose pooled 1x1 head comes after)."""
    has_conv = {
        name
        for name, m in model.named_modules()
        if name and any(isinstance(s, nn.Conv2d) for s in m.modules())
    }
    order: list[str] = []

    def keep(name: str, out: torch.Tensor) -> None:
        if out.ndim == 4 and out.shape[2] * out.shape[3] > 1:
            order.append(name)

    with recording(model, keep, has_conv), eval_mode(model):
        model(x[:1])
    if not order:
        raise ValueError(
            f"{type(model).__name__} has no convolutional layer with spatial maps (more "
            "than 1x1) to explain"
        )
    return order[-1]


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    scale = float(b.abs().max()) + 1e-6
    return a.shape == b.shape and float((a - b).abs().max()) <= 1e-4 * scale + 1e-5


def cam_all_classes(features: torch.Tensor, head: GapHead) -> torch.Tensor:
    """CAMs of every class: ``[N, C, h, w]`` features -> ``[N, K, h, w]``.

    The features are reshaped to ``(N, hw, C)`` and passed through the linear layer
    without its bias, giving ``(N, hw, K)``: ``CAM_c(i, j) = sum_k W[c, k] A[k, i, j]``.
    """
    n, c, h, w = features.shape
    if c != head.weight.shape[1]:
        raise ValueError(
            f"features have {c} channels but the linear layer takes {head.weight.shape[1]}"
        )
    flat = features.float().permute(0, 2, 3, 1).reshape(n, h * w, c)  # (N, hw, C)
    scores = F.linear(flat, head.weight.to(flat.device))  # (N, hw, K)
    return scores.permute(0, 2, 1).reshape(n, -1, h, w)


__all__ = [
    "GapHead",
    "NotGapHeadError",
    "cam_all_classes",
    "class_map_head",
    "default_layer",
    "find_gap_head",
    "input_probe",
    "last_conv_module",
]
