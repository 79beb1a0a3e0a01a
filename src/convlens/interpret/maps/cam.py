"""The CAM family: weighted sums of one layer's channels, one map per class.

For a GAP + linear head with features ``A`` (``[C, h, w]``), weights ``W``
(``[K, C]``) and bias ``b``::

    logit_c = sum_k W[c, k] * mean_ij A[k, i, j] + b_c
    CAM_c(i, j) = sum_k W[c, k] * A[k, i, j]

so the CAMs of all classes are one matrix product, ``(hw x C) @ W.T -> (hw x K)``,
and ``mean_ij CAM_c + b_c = logit_c`` exactly. Grad-CAM replaces ``W[c, k]`` by
the spatial mean of ``d logit_c / d A[k]`` and keeps the positive part; on a GAP +
linear head that mean is ``W[c, k] / (h w)``, so Grad-CAM is ``ReLU(CAM) / (h w)``.

Each member overrides only how the channel weights are computed
(:meth:`~convlens.interpret.maps.base.ActivationMapMethod.channel_weights`, or
``weights_from`` for the gradient methods) and has one row in
:mod:`convlens.interpret.maps.registry`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from convlens.core.hooks import (
    capture,
    channels_last_twin,
    eval_mode,
    frozen,
    get_layer,
    replaced,
    score_gradient,
)
from convlens.interpret.heads import find_gap_head, input_probe
from convlens.interpret.maps import registry
from convlens.interpret.maps.base import ActivationMapMethod, Site


class CAM(ActivationMapMethod):
    """Class activation mapping (Zhou et al., 2016): ``alpha[c, k] = W[c, k]`` of the
    final linear layer. Only for GAP + linear heads; the layer must be the one whose
    average feeds that linear layer (found automatically)."""

    def locate(self, x: torch.Tensor) -> Site:
        head = find_gap_head(self.model, input_probe(x), self.layer)
        return Site(head.layer, head)

    def channel_weights(
        self, site: Site, features: torch.Tensor, logits: torch.Tensor, classes: torch.Tensor
    ) -> torch.Tensor:
        assert site.head is not None  # locate() always finds one or raises
        return site.head.weight.to(features.device)[classes]  # [N, T, C]


class GradientMethod(ActivationMapMethod):
    """A method whose weights come from the gradient of the class logits with respect
    to the layer's output (one forward pass, one backward pass per target rank)."""

    relu = True

    def forward(self, x: torch.Tensor, layer: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and features that keep their autograd graph, for channel_weights."""
        logits, (features,) = graph_forward(self.model, x, [layer])
        return logits, features

    def channel_weights(
        self, site: Site, features: torch.Tensor, logits: torch.Tensor, classes: torch.Tensor
    ) -> torch.Tensor:
        return self.weights_from(class_gradients(logits, features, classes), features.detach())

    def weights_from(self, grads: torch.Tensor, acts: torch.Tensor) -> torch.Tensor:
        """Weights from the gradients ``[N, T, C, h, w]`` and activations ``[N, C, h, w]``."""
        raise NotImplementedError


def graph_forward(
    model: nn.Module, x: torch.Tensor, layers: list[str]
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """``(logits, outputs)``: one forward pass whose ``layers``' outputs keep their
    autograd graph. The input requires grad so the outputs do even when the caller froze
    the parameters; no parameter gradient is computed or stored."""
    xg = x.detach().clone().requires_grad_(True)
    with (
        eval_mode(model),
        frozen(model),
        torch.enable_grad(),
        capture(model, layers, detach=False) as store,
    ):
        logits = model(xg)
    missing = [n for n in layers if n not in store]
    if missing:
        raise ValueError(f"layer {missing[0]!r} was not run by the model's forward pass")
    return logits.float(), [store[n] for n in layers]


GRADIENT_REFERENCES = ("pytorch-grad-cam", "torchcam")


def gradient_base(
    model: nn.Module, layer: str | None, base: str, reference: str, who: str
) -> GradientMethod:
    """The gradient CAM ``base`` that method ``who`` builds on, following ``reference``
    (torchcam's Grad-CAM++ is its own variant, see :class:`GradCAMpp`).

    Raises:
        ValueError: an unknown reference, or a base that is not a gradient CAM.
    """
    if reference not in GRADIENT_REFERENCES:
        raise ValueError(
            f"`reference` must be one of {', '.join(GRADIENT_REFERENCES)}, got {reference!r}"
        )
    bases = registry.flags()["base"].choices or ()
    if base not in bases:
        raise ValueError(f"{who}'s base must be one of {', '.join(bases)}, got {base!r}")
    made = registry.method_class(base)
    torchcam = issubclass(made, GradCAMpp) and reference == "torchcam"
    return made(model, layer, **({"reference": "torchcam"} if torchcam else {}))  # type: ignore[return-value]


def class_gradients(
    logits: torch.Tensor, features: torch.Tensor, classes: torch.Tensor
) -> torch.Tensor:
    """``d logit_c / d A``: ``[N, T, C, h, w]`` for the classes ``[N, T]``; ``logits`` and
    ``features`` must come from one forward pass that kept its graph."""
    last = classes.shape[1] - 1
    grads = [
        score_gradient(logits, features, classes[:, t], retain_graph=t < last).float()
        for t in range(classes.shape[1])
    ]
    return torch.stack(grads, dim=1)


class GradCAM(GradientMethod):
    """Grad-CAM (Selvaraju et al., 2017): ``alpha[c, k] = mean_ij d logit_c / d A[k, i, j]``
    and a ReLU on the weighted sum. Works on any layer with ``[N, C, h, w]`` output."""

    def weights_from(self, grads: torch.Tensor, acts: torch.Tensor) -> torch.Tensor:
        return grads.mean((3, 4))


class GradCAMpp(GradientMethod):
    """Grad-CAM++ (Chattopadhyay et al., 2018), eq. 19 with exponential scores:
    ``alpha_ij = g^2 / (2 g^2 + sum_ab A_ab g^3)`` (0 where ``g = 0``) and
    ``w_k = sum_ij alpha_ij relu(g_ij)``, as pytorch-grad-cam computes it.

    ``reference="torchcam"`` reproduces torchcam 0.5, whose in-place division of
    ``alpha`` acts on a copy (``alpha[mask].div_``) and so leaves ``alpha = g^2``:
    ``w_k = sum_ij g^2 relu(g)``. See docs/faithfulness.md."""

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
        alpha = g2 / (2 * g2 + total * (g2 * grads) + 1e-6)  # the reference's order
        alpha = torch.where(grads != 0, alpha, torch.zeros_like(alpha))
        return (grads.clamp_min(0) * alpha).sum((3, 4))


class XGradCAM(GradientMethod):
    """XGrad-CAM (Fu et al., 2020): ``w_k = sum_ij g_ij A_ij / (sum_ij A_ij + eps)``."""

    def weights_from(self, grads: torch.Tensor, acts: torch.Tensor) -> torch.Tensor:
        total = acts.sum((2, 3))[:, None] + 1e-7  # [N, 1, C]
        return (grads * acts[:, None]).sum((3, 4)) / total


class LayerCAM(GradientMethod):
    """LayerCAM (Jiang et al., 2021): each position weighted by its own positive
    gradient, ``map = relu(sum_k relu(g_k) A_k)``."""

    def weights_from(self, grads: torch.Tensor, acts: torch.Tensor) -> torch.Tensor:
        return grads.clamp_min(0)  # [N, T, C, h, w]


class HiResCAM(GradientMethod):
    """HiResCAM (Draelos and Carin, 2020): ``map = relu(sum_k g_k * A_k)``, the
    element-wise product that keeps the map faithful to the logit."""

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
        ran = masked_logits(self.model, lambda idx: x[idx // c] * masks[idx, None], todo,
                            self.batch_size)  # fmt: skip
        per_channel = ran.new_empty(n * c, ran.shape[1])
        per_channel[~live] = ran[-1] if len(todo) > int(live.sum()) else 0
        per_channel[live] = ran[: int(live.sum())]
        return score_weighted(per_channel.reshape(n, c, -1), classes, features)


def score_weighted(
    scores: torch.Tensor, classes: torch.Tensor, features: torch.Tensor
) -> torch.Tensor:
    """The Score-CAM family's maps ``[N, T, h, w]``: for each target class of
    ``classes`` ``[N, T]``, the channels ``features`` ``[N, C, h, w]`` weighted by the
    softmax over channels of their scores ``[N, C, K]`` (each channel's masked image's
    score for every class)."""
    n, c = scores.shape[:2]
    picked = scores.gather(2, classes[:, None, :].expand(n, c, -1))  # [N, C, T]
    alpha = picked.softmax(1).transpose(1, 2)  # [N, T, C]
    return (alpha[..., None, None] * features[:, None]).sum(2)


def torchcam_noise(
    generator: torch.Generator, stdev: float, shape: torch.Size | tuple[int, ...]
) -> torch.Tensor:
    """Gaussian noise of deviation ``stdev`` drawn on the CPU from ``generator``, as
    ``torch.distributions.Normal(0, stdev).sample(shape)`` draws it from torch's global
    generator: the same numbers for the same seed (SS-CAM's, Smooth Grad-CAM++'s)."""
    zero = torch.zeros((), device="cpu")
    spread = torch.tensor(float(stdev), device="cpu")
    return torch.normal(zero.expand(shape), spread.expand(shape), generator=generator)


def check_noise(samples: int, stdev: float) -> None:
    """The noisy members' options: at least one sample, a deviation of 0 or more."""
    if samples < 1:
        raise ValueError(f"`samples` must be at least 1, got {samples}")
    if not stdev >= 0:
        raise ValueError(f"`stdev` must be at least 0, got {stdev}")


def masked_logits(
    model: nn.Module,
    inputs: Callable[[torch.Tensor], torch.Tensor],
    items: torch.Tensor,
    batch_size: int,
    layer_output: tuple[str, Callable[[torch.Tensor], torch.Tensor]] | None = None,
    twin: bool = True,
) -> torch.Tensor:
    """``[len(items), K]``: the logits of ``inputs(idx)`` for the items in batches of
    ``batch_size``, in evaluation mode and, on the CPU, through a channels-last twin of
    the model (oneDNN's faster layout for the many passes of the perturbation methods;
    ``twin=False``: ``model`` is one already). ``layer_output``: ``(layer, fn)``
    replaces that layer's output by ``fn(idx)``."""
    cpu = items.device.type == "cpu"
    forward = channels_last_twin(model) if cpu and twin else model
    scores = []
    current: list[torch.Tensor] = []
    swap: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
    if layer_output is not None:  # the layer itself does not run: its output is given
        name, replace = layer_output
        swap = replaced(get_layer(forward, name), lambda: replace(current[-1]))
    with eval_mode(forward), torch.no_grad(), swap:
        for start in range(0, len(items), batch_size):
            current.append(items[start : start + batch_size])
            batch = inputs(current[-1])
            if batch.device.type == "cpu":
                batch = batch.contiguous(memory_format=torch.channels_last)
            scores.append(forward(batch).float())
    return torch.cat(scores)


def first_projection(rows: torch.Tensor) -> torch.Tensor:
    """``[N, hw]``: each ``[hw, C]`` matrix of ``rows`` (``[N, hw, C]``), centred per
    column, projected on its first right singular vector, as pytorch-grad-cam's
    ``get_2d_projection`` computes it (LAPACK's SVD through NumPy, so the direction's sign
    is the same; the reduced SVD gives the same first vector as its full one)."""
    import numpy as np

    out = []
    for a in rows.nan_to_num(0.0).cpu().numpy():
        centred = a - a.mean(axis=0)
        _, _, vh = np.linalg.svd(centred, full_matrices=False)
        out.append(torch.from_numpy(centred @ vh[0]))
    return torch.stack(out).to(rows.device, torch.float32)


class EigenCAM(ActivationMapMethod):
    """Eigen-CAM (Muhammad and Yeasin, 2020): the activations at each position
    (``[hw, C]``, centred per channel) projected on their first principal direction;
    the same map for every class. A principal direction has no sign of its own: as in
    pytorch-grad-cam, it is the one LAPACK's SVD (through NumPy) returns, and the ReLU
    keeps the positive side, so the maps equal pytorch-grad-cam's.

    The reduced SVD (``U`` of ``hw x min(hw, C)``) gives the same first direction as
    pytorch-grad-cam's full one, whose ``U`` of ``hw x hw`` needs 10 GB for one 224 x
    224 map: memory here grows with channels x positions."""

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
        n, h, w = features.shape[0], features.shape[2], features.shape[3]
        out = first_projection(features.flatten(2).transpose(1, 2)).reshape(n, 1, h, w)
        return out.expand(n, classes.shape[1], h, w)


__all__ = [
    "CAM",
    "GRADIENT_REFERENCES",
    "EigenCAM",
    "GradCAM",
    "GradCAMpp",
    "GradientMethod",
    "HiResCAM",
    "LayerCAM",
    "ScoreCAM",
    "XGradCAM",
    "check_noise",
    "class_gradients",
    "first_projection",
    "gradient_base",
    "graph_forward",
    "masked_logits",
    "score_weighted",
    "torchcam_noise",
]
