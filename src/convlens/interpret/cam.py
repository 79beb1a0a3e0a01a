"""Class activation maps (Problem 3): CAM for networks that end in global average
pooling plus one linear layer, and Grad-CAM for any convolutional layer.

For a GAP + linear head with features ``A`` (``[C, h, w]``), weights ``W``
(``[K, C]``) and bias ``b``::

    logit_c = sum_k W[c, k] * mean_ij A[k, i, j] + b_c
    CAM_c(i, j) = sum_k W[c, k] * A[k, i, j]

so the CAMs of all classes are one matrix product, ``(hw x C) @ W.T -> (hw x K)``,
and ``mean_ij CAM_c + b_c = logit_c`` exactly. Grad-CAM replaces ``W[c, k]`` by
the spatial mean of ``d logit_c / d A[k]`` and keeps the positive part; on a GAP +
linear head that mean is ``W[c, k] / (h w)``, so Grad-CAM is ``ReLU(CAM) / (h w)``.

Both methods share :class:`ActivationMapMethod`; each overrides only how the
channel weights are computed.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from convlens.core.hooks import capture, channels_last_twin, eval_mode, frozen, get_layer, hooked
from convlens.core.tensors import minmax_scale


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


class FlatMapsWarning(UserWarning):
    """The layer asked for has 1x1 outputs: its maps cannot show where anything is."""


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

    def record(name: str) -> Callable[..., None]:
        def hook(_m: nn.Module, _inp: tuple[torch.Tensor, ...], out: object) -> None:
            if not isinstance(out, torch.Tensor):
                return
            shapes[name] = tuple(out.shape)
            if out.ndim == 4 and out.shape[1] == fc.in_features:
                seen.append((name, out.detach().float().mean((2, 3)), out.shape[2] * out.shape[3]))

        return hook

    def fc_hook(_m: nn.Module, inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        fc_io["in"], fc_io["out"] = inp[0].detach().float(), out.detach().float()

    watched = [
        (module, record(name))
        for name, module in model.named_modules()
        if name and (layer is None or name == layer)
    ]
    with hooked([*watched, (fc, fc_hook)]), eval_mode(model):
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
    x = x[:1]
    maps: list[tuple[str, torch.Tensor]] = []

    def record(name: str) -> Callable[..., None]:
        def hook(_m: nn.Module, _inp: tuple[torch.Tensor, ...], out: object) -> None:
            if isinstance(out, torch.Tensor) and out.ndim == 4 and out.shape[2] * out.shape[3] > 1:
                maps.append((name, out.detach().float().mean((2, 3))))

        return hook

    watched = [
        (module, record(name))
        for name, module in model.named_modules()
        if name and (layer is None or name == layer)
    ]
    with hooked(watched), eval_mode(model):
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
    g = torch.Generator().manual_seed(0)
    return torch.randn(1, *x.shape[1:], generator=g).to(x.device, x.dtype)


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

    def record(name: str) -> Callable[..., None]:
        def hook(_m: nn.Module, _inp: tuple[torch.Tensor, ...], out: object) -> None:
            if isinstance(out, torch.Tensor) and out.ndim == 4 and out.shape[2] * out.shape[3] > 1:
                order.append(name)

        return hook

    with hooked((get_layer(model, name), record(name)) for name in has_conv), eval_mode(model):
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

    name = "base"
    relu = False

    def __init__(self, model: nn.Module, layer: str | None = None) -> None:
        self.model = model
        self.layer = layer

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
        ``[N, T]``), at the layer's resolution and upsampled to the input's."""
        if x.ndim != 4:
            raise ValueError(f"inputs must be [N, C, H, W], got shape {tuple(x.shape)}")
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


class CAM(ActivationMapMethod):
    """Class activation mapping (Zhou et al., 2016): ``alpha[c, k] = W[c, k]`` of the
    final linear layer. Only for GAP + linear heads; the layer must be the one whose
    average feeds that linear layer (found automatically)."""

    name = "cam"

    def locate(self, x: torch.Tensor) -> Site:
        head = find_gap_head(self.model, input_probe(x), self.layer)
        return Site(head.layer, head)

    def channel_weights(
        self, site: Site, features: torch.Tensor, logits: torch.Tensor, classes: torch.Tensor
    ) -> torch.Tensor:
        assert site.head is not None  # locate() always finds one or raises
        return site.head.weight.to(features.device)[classes]  # [N, T, C]


class _GradientMethod(ActivationMapMethod):
    """A method whose weights come from the gradient of the class logits with respect
    to the layer's output (one forward pass, one backward pass per target rank)."""

    relu = True

    def forward(self, x: torch.Tensor, layer: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and features that keep their autograd graph, for channel_weights.
        The input requires grad so the layer's output does even when the caller froze
        the parameters; no parameter gradient is computed or stored."""
        xg = x.detach().clone().requires_grad_(True)
        with (
            eval_mode(self.model),
            frozen(self.model),
            torch.enable_grad(),
            capture(self.model, layer, detach=False) as store,
        ):
            logits = self.model(xg)
        if layer not in store:
            raise ValueError(f"layer {layer!r} was not run by the model's forward pass")
        return logits.float(), store[layer]

    def channel_weights(
        self, site: Site, features: torch.Tensor, logits: torch.Tensor, classes: torch.Tensor
    ) -> torch.Tensor:
        return self.weights_from(gradients(logits, features, classes), features.detach())

    def weights_from(self, grads: torch.Tensor, acts: torch.Tensor) -> torch.Tensor:
        """Weights from the gradients ``[N, T, C, h, w]`` and activations ``[N, C, h, w]``."""
        raise NotImplementedError


def gradients(logits: torch.Tensor, features: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """``d logit_c / d A``: ``[N, T, C, h, w]`` for the classes ``[N, T]``; ``logits`` and
    ``features`` must come from one forward pass that kept its graph."""
    grads = []
    for t in range(classes.shape[1]):
        # Images are independent in evaluation mode, so one backward pass of the summed
        # target logits gives every image's gradient.
        target = logits.gather(1, classes[:, t : t + 1]).sum()
        (grad,) = torch.autograd.grad(target, features, retain_graph=t + 1 < classes.shape[1])
        grads.append(grad.float())
    return torch.stack(grads, dim=1)


class GradCAM(_GradientMethod):
    """Grad-CAM (Selvaraju et al., 2017): ``alpha[c, k] = mean_ij d logit_c / d A[k, i, j]``
    and a ReLU on the weighted sum. Works on any layer with ``[N, C, h, w]`` output."""

    name = "gradcam"

    def weights_from(self, grads: torch.Tensor, acts: torch.Tensor) -> torch.Tensor:
        return grads.mean((3, 4))


class GradCAMpp(_GradientMethod):
    """Grad-CAM++ (Chattopadhyay et al., 2018), eq. 19 with exponential scores:
    ``alpha_ij = g^2 / (2 g^2 + sum_ab A_ab g^3)`` (0 where ``g = 0``) and
    ``w_k = sum_ij alpha_ij relu(g_ij)``, as pytorch-grad-cam computes it.

    ``reference="torchcam"`` reproduces torchcam 0.5, whose in-place division of
    ``alpha`` acts on a copy (``alpha[mask].div_``) and so leaves ``alpha = g^2``:
    ``w_k = sum_ij g^2 relu(g)``. See docs/faithfulness.md."""

    name = "gradcampp"

    def __init__(
        self, model: nn.Module, layer: str | None = None, reference: str = "paper"
    ) -> None:
        super().__init__(model, layer)
        if reference not in ("paper", "torchcam"):
            raise ValueError(f"`reference` must be 'paper' or 'torchcam', got {reference!r}")
        self.reference = reference

    def weights_from(self, grads: torch.Tensor, acts: torch.Tensor) -> torch.Tensor:
        g2 = grads.pow(2)
        if self.reference == "torchcam":
            return (g2 * grads.clamp_min(0)).sum((3, 4))
        total = acts.sum((2, 3))[:, None, :, None, None]  # [N, 1, C, 1, 1]
        alpha = g2 / (2 * g2 + total * g2 * grads + 1e-6)
        alpha = torch.where(grads != 0, alpha, torch.zeros_like(alpha))
        return (grads.clamp_min(0) * alpha).sum((3, 4))


class XGradCAM(_GradientMethod):
    """XGrad-CAM (Fu et al., 2020): ``w_k = sum_ij g_ij A_ij / (sum_ij A_ij + eps)``."""

    name = "xgradcam"

    def weights_from(self, grads: torch.Tensor, acts: torch.Tensor) -> torch.Tensor:
        total = acts.sum((2, 3))[:, None] + 1e-7  # [N, 1, C]
        return (grads * acts[:, None]).sum((3, 4)) / total


class LayerCAM(_GradientMethod):
    """LayerCAM (Jiang et al., 2021): each position weighted by its own positive
    gradient, ``map = relu(sum_k relu(g_k) A_k)``."""

    name = "layercam"

    def weights_from(self, grads: torch.Tensor, acts: torch.Tensor) -> torch.Tensor:
        return grads.clamp_min(0)  # [N, T, C, h, w]


class HiResCAM(_GradientMethod):
    """HiResCAM (Draelos and Carin, 2020): ``map = relu(sum_k g_k * A_k)``, the
    element-wise product that keeps the map faithful to the logit."""

    name = "hirescam"

    def weights_from(self, grads: torch.Tensor, acts: torch.Tensor) -> torch.Tensor:
        return grads  # [N, T, C, h, w]


class ScoreCAM(ActivationMapMethod):
    """Score-CAM (Wang et al., 2020): each channel, scaled to [0, 1] and upsampled to
    the input, masks the image; ``w_k = softmax_k(logit_c(x * M_k))``, then a ReLU.

    All ``N x C`` masked images run once, in batches of ``batch_size`` in channels-last
    layout on the CPU, and give the weights of every target class at once (torchcam runs
    them again for each class); channels that are constant over the map (dead units) all
    give the zero image, which runs once.
    ``reference`` picks how masks are made: ``"torchcam"`` (default) scales at the
    layer's resolution then upsamples with ``align_corners=False``; ``"pytorch-grad-cam"``
    upsamples with ``align_corners=True`` then scales."""

    name = "scorecam"
    relu = True

    def __init__(
        self,
        model: nn.Module,
        layer: str | None = None,
        batch_size: int = 32,
        reference: str = "torchcam",
    ) -> None:
        super().__init__(model, layer)
        if reference not in ("torchcam", "pytorch-grad-cam"):
            raise ValueError(
                f"`reference` must be 'torchcam' or 'pytorch-grad-cam', got {reference!r}"
            )
        self.batch_size = batch_size
        self.reference = reference

    def masks(self, acts: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """``[N, C, H, W]`` masks in [0, 1] from the activations ``[N, C, h, w]``."""
        if self.reference == "torchcam":
            lo = acts.amin((2, 3), keepdim=True)
            scaled = (acts - lo) / ((acts - lo).amax((2, 3), keepdim=True) + 1e-8)
            return F.interpolate(scaled, size=size, mode="bilinear", align_corners=False)
        up = F.interpolate(acts, size=size, mode="bilinear", align_corners=True)
        lo, hi = up.amin((2, 3), keepdim=True), up.amax((2, 3), keepdim=True)
        return (up - lo) / (hi - lo + 1e-8)

    @torch.no_grad()
    def weighted_maps(
        self,
        x: torch.Tensor,
        site: Site,
        features: torch.Tensor,
        logits: torch.Tensor,
        classes: torch.Tensor,
    ) -> torch.Tensor:
        n, c = features.shape[:2]
        masks = self.masks(features, (x.shape[2], x.shape[3])).flatten(0, 1)  # [N * C, H, W]
        # A channel that is constant over the map (a dead unit: zero everywhere after its
        # ReLU) scales to an all-zero mask, so its masked image is the zero image; that
        # one image runs once instead of once per such channel.
        flat = features.flatten(2)
        live = (flat.amax(2) > flat.amin(2)).flatten()  # [N * C]
        todo = live.nonzero().flatten()
        if len(todo) < n * c:
            todo = torch.cat([todo, (~live).nonzero().flatten()[:1]])
        forward = channels_last_twin(self.model) if x.device.type == "cpu" else self.model
        scores = []  # logits of the masked images that run
        with eval_mode(self.model):
            for start in range(0, len(todo), self.batch_size):
                idx = todo[start : start + self.batch_size]
                batch = x[idx // c] * masks[idx, None]
                if batch.device.type == "cpu":  # oneDNN's faster layout for convolutions
                    batch = batch.contiguous(memory_format=torch.channels_last)
                scores.append(forward(batch).float())
        ran = torch.cat(scores)
        per_channel = ran.new_empty(n * c, ran.shape[1])
        per_channel[~live] = ran[-1] if len(todo) > int(live.sum()) else 0
        per_channel[live] = ran[: int(live.sum())]
        per_channel = per_channel.reshape(n, c, -1)  # [N, C, K]
        picked = per_channel.gather(2, classes[:, None, :].expand(n, c, -1))  # [N, C, T]
        alpha = picked.softmax(1).transpose(1, 2)  # [N, T, C]
        return (alpha[..., None, None] * features[:, None]).sum(2)


class EigenCAM(ActivationMapMethod):
    """Eigen-CAM (Muhammad and Yeasin, 2020): the activations at each position
    (``[hw, C]``, centred per channel) projected on their first principal direction;
    the same map for every class. A principal direction has no sign of its own: as in
    pytorch-grad-cam, it is the one LAPACK's SVD (through NumPy) returns, and the ReLU
    keeps the positive side, so the maps equal pytorch-grad-cam's.

    The reduced SVD (``U`` of ``hw x min(hw, C)``) gives the same first direction as
    pytorch-grad-cam's full one, whose ``U`` of ``hw x hw`` needs 10 GB for one 224 x
    224 map: memory here grows with channels x positions."""

    name = "eigencam"
    relu = True

    @torch.no_grad()
    def weighted_maps(
        self,
        x: torch.Tensor,
        site: Site,
        features: torch.Tensor,
        logits: torch.Tensor,
        classes: torch.Tensor,
    ) -> torch.Tensor:
        import numpy as np

        n, h, w = features.shape[0], features.shape[2], features.shape[3]
        rows = features.nan_to_num(0.0).flatten(2).transpose(1, 2).cpu().numpy()  # [N, hw, C]
        maps = []
        for a in rows:
            centred = a - a.mean(axis=0)
            _, _, vh = np.linalg.svd(centred, full_matrices=False)
            maps.append(torch.from_numpy(centred @ vh[0]).reshape(h, w))
        out = torch.stack(maps).to(features.device, torch.float32)[:, None]
        return out.expand(n, classes.shape[1], h, w)


METHODS: dict[str, type[ActivationMapMethod]] = {
    "cam": CAM,
    "gradcam": GradCAM,
    "gradcampp": GradCAMpp,
    "xgradcam": XGradCAM,
    "layercam": LayerCAM,
    "hirescam": HiResCAM,
    "scorecam": ScoreCAM,
    "eigencam": EigenCAM,
}
NAMES = {
    "cam": "CAM",
    "gradcam": "Grad-CAM",
    "gradcampp": "Grad-CAM++",
    "xgradcam": "XGrad-CAM",
    "layercam": "LayerCAM",
    "hirescam": "HiResCAM",
    "scorecam": "Score-CAM",
    "eigencam": "Eigen-CAM",
}


def all_methods() -> dict[str, type[ActivationMapMethod]]:
    """Every map method: the CAM family (:data:`METHODS`) and the pixel attributions of
    :mod:`convlens.interpret.attribution`, which build on this module."""
    from convlens.interpret import attribution

    return {**METHODS, **attribution.METHODS}


def method_names() -> dict[str, str]:
    """Display names of :func:`all_methods`."""
    from convlens.interpret import attribution

    return {**NAMES, **attribution.NAMES}


def class_maps(
    model: nn.Module,
    x: torch.Tensor,
    top: int = 5,
    method: str = "cam",
    layer: str | None = None,
    classes: torch.Tensor | None = None,
    options: dict[str, Any] | None = None,
) -> ClassMaps:
    """Maps of ``x`` with ``method`` (a key of :func:`all_methods`: a CAM method or a
    pixel attribution) for the ``top`` most probable classes of each image, or for
    ``classes`` (``[N, T]``). ``options`` go to the method (a pixel attribution's
    ``steps``, ``baseline``, ...).

    Raises:
        NotGapHeadError: ``cam`` on a model without a GAP + linear head.
        ValueError: unknown method, option or layer, bad ``top`` or class index.
    """
    methods = all_methods()
    if method not in methods:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(methods)}")
    try:
        maker = methods[method](model, layer, **(options or {}))
    except TypeError as e:  # a CAM method given a pixel attribution's option
        raise ValueError(f"{method} has no option(s) {', '.join(options or {})}") from e
    return maker(x, top=top, classes=classes)


def every_method(
    model: nn.Module,
    x: torch.Tensor,
    layer: str | None = None,
    classes: torch.Tensor | None = None,
) -> dict[str, ClassMaps]:
    """The maps of every method in :data:`METHODS` for the top class of each image (or
    ``classes``, ``[N, T]``), in one layer; CAM is left out when the model has no GAP
    + linear head (or ``layer`` is not the one feeding it)."""
    out = {}
    for name, method in METHODS.items():
        try:
            out[name] = method(model, layer)(x, top=1, classes=classes)
        except NotGapHeadError:
            if name != "cam":
                raise
    return out
