"""ROAD (Rong et al., ICML 2022, "A Consistent and Efficient Evaluation Strategy for
Attribution Methods"): removal curves whose removed pixels are filled by **noisy linear
imputation**, so that the shape of the removal mask does not itself tell the model the
class.

Each removed pixel takes the weighted mean of its eight neighbours (weights 1/6 for the
four sides, 1/12 for the four corners, as in the paper and pytorch-grad-cam's
``NoisyLinearImputer``), kept pixels fixed: a sparse linear system, solved here for a
whole batch at once by conjugate gradients on the 3 x 3 stencil (the system is symmetric
and positive definite while some pixel is kept), then ``noise`` times a standard normal
draw is added to the removed pixels, drawn per image in pytorch-grad-cam's order (channel
by channel over the removed pixels in raster order), so that the same seed gives the same
picture.

The curves: for each removal fraction ``f``, most relevant first (MoRF) removes the
pixels the map ranks highest, least relevant first (LeRF) the lowest, by one of two
rules:

- ``count`` (the default, quantus 0.6.0's ``ROAD``): exactly ``int(f H W)`` pixels, ranked
  by the map (ties by position), the noise drawn from ``numpy.random.RandomState(seed)``
  in the order of the ranking;
- ``percentile`` (pytorch-grad-cam's ``RemoveMostRelevantFirst`` and
  ``RemoveLeastRelevantFirst``): the pixels at or above the map's ``100 (1 - f)``-th
  percentile (of ``1 - map`` for LeRF), the noise from ``torch.Generator(seed)`` in raster
  order. Under ties (a ReLU'd map's zeros) it can remove every pixel.

The scores are the class's probability on the imputed image, and whether the class is
still the top one (quantus's ROAD score, averaged over images).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from convlens.core.device import model_device
from convlens.core.hooks import channels_last_twin, eval_mode
from convlens.core.precision import in_precision

FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
ORDERS = ("morf", "lerf")
RULES = ("count", "percentile")


def _stencil(values: torch.Tensor) -> torch.Tensor:
    """``sum_j w_j values[neighbour j]`` for every pixel of ``[B, 1, H, W]`` (zero outside),
    by shifted sums (float64 convolution has no fast kernel on the CPU): the 3 x 3 kernel
    is ``[1, 2, 1]`` down times ``[1, 2, 1]`` across, over 12, less its centre (1/3)."""
    h, w = values.shape[-2:]
    p = F.pad(values, (1, 1, 1, 1))
    down = p[..., 0:h, :] + p[..., 2 : h + 2, :] + 2 * p[..., 1 : h + 1, :]  # [..., h, w + 2]
    across = down[..., 0:w] + down[..., 2 : w + 2] + 2 * down[..., 1 : w + 1]
    return across / 12 - values / 3


def impute(
    x: torch.Tensor,
    keep: torch.Tensor,
    noise: float = 0.01,
    generator: torch.Generator | np.random.RandomState | None = None,
    tol: float = 1e-12,
    ranking: torch.Tensor | None = None,
) -> torch.Tensor:
    """``x`` (``[N, C, H, W]``) with the pixels where ``keep`` (``[N, H, W]`` bool) is
    false replaced by noisy linear imputation (see the module doc). The noise is drawn
    from ``generator`` (torch's or numpy's) as ``[C, removed]``, its columns going to the
    removed pixels in raster order, or in the order of ``ranking`` (``[N, H W]``
    positions, a permutation per image).

    Raises:
        ValueError: a mask of another size, or an image with no pixel kept.
    """
    n, c, h, w = x.shape
    if keep.shape != (n, h, w):
        raise ValueError(f"the mask is {tuple(keep.shape)}, the images {(n, h, w)}")
    if not bool(keep.flatten(1).any(1).all()):
        raise ValueError("an image has no pixel kept: a removal fraction must be below 1")
    known = keep.to(torch.float64)[:, None].expand(n, c, h, w).reshape(n * c, 1, h, w)
    free = 1.0 - known
    image = x.to(torch.float64).reshape(n * c, 1, h, w)
    degree = _stencil(torch.ones(1, 1, h, w, dtype=torch.float64, device=x.device))

    def system(u: torch.Tensor) -> torch.Tensor:  # the equations of the removed pixels
        return free * (degree * u - _stencil(free * u))

    rhs = free * _stencil(known * image)
    u = _conjugate_gradients(system, rhs, tol)
    filled = known * image + free * u
    out = filled.reshape(n, c, h, w).to(x.dtype)
    if noise:
        removed = ~keep.flatten(1).cpu()
        for i in range(n):  # [C, removed pixels], in raster order or the ranking's
            if ranking is None:
                where = torch.nonzero(removed[i], as_tuple=True)[0]
            else:
                order = ranking[i].cpu()
                where = order[removed[i][order]]
            if isinstance(generator, np.random.RandomState):
                draw = torch.from_numpy(generator.randn(c, len(where)))
            else:
                draw = torch.randn(c, len(where), generator=generator, device="cpu")
            out[i].view(c, -1)[:, where.to(x.device)] += (noise * draw).to(x.device, x.dtype)
    return out


def _conjugate_gradients(
    system: Callable[[torch.Tensor], torch.Tensor], rhs: torch.Tensor, tol: float
) -> torch.Tensor:
    """Solve ``system(u) = rhs`` for each image of the batch (symmetric positive definite
    on the removed pixels), to a relative residual of ``tol``."""
    u = torch.zeros_like(rhs)
    r = rhs.clone()
    p = r.clone()
    rr = (r * r).sum((1, 2, 3))
    stop = tol * tol * rr.clamp_min(1e-300)
    for _ in range(10 * rhs.shape[-1] * rhs.shape[-2]):
        if bool((rr <= stop).all()):
            break
        ap = system(p)
        alpha = (rr / (p * ap).sum((1, 2, 3)).clamp_min(1e-300))[:, None, None, None]
        u.addcmul_(alpha, p)
        r.addcmul_(alpha, ap, value=-1)
        new = (r * r).sum((1, 2, 3))
        p.mul_((new / rr.clamp_min(1e-300))[:, None, None, None]).add_(r)
        rr = new
    return u


def ranking(maps: torch.Tensor, order: str = "morf") -> torch.Tensor:
    """``[N, H W]``: each map's positions, the first removed first (``morf``: the
    highest values; ``lerf``: the lowest; ties by position)."""
    if order not in ORDERS:
        raise ValueError(f"order must be one of {', '.join(ORDERS)}, got {order!r}")
    score = maps.detach().flatten(1).double().cpu()
    return torch.argsort(-score if order == "morf" else score, dim=1, stable=True)


def removal_mask(
    maps: torch.Tensor, fraction: float, order: str = "morf", rule: str = "count"
) -> torch.Tensor:
    """``[N, H, W]`` bool, true where a pixel is kept when ``fraction`` of the pixels of
    each map (``[N, H, W]``, in [0, 1]) are removed, the most relevant first (``morf``) or
    the least (``lerf``), by ``rule`` (see the module doc)."""
    _check(fraction, order, rule)
    if rule == "count":
        return _kept(torch.argsort(ranking(maps, order), dim=1), fraction, maps)
    score = maps if order == "morf" else 1 - maps
    flat = score.detach().cpu().double().flatten(1).numpy()
    threshold = np.percentile(flat, 100 * (1 - fraction), axis=1)
    return torch.from_numpy(flat < threshold[:, None]).reshape(maps.shape).to(maps.device)


def _check(fraction: float, order: str, rule: str) -> None:
    if not 0 < fraction < 1:
        raise ValueError(f"a removal fraction must be in (0, 1), got {fraction}")
    if order not in ORDERS:
        raise ValueError(f"order must be one of {', '.join(ORDERS)}, got {order!r}")
    if rule not in RULES:
        raise ValueError(f"rule must be one of {', '.join(RULES)}, got {rule!r}")


def _kept(ranks: torch.Tensor, fraction: float, maps: torch.Tensor) -> torch.Tensor:
    """The count rule's mask from each position's rank (``[N, H W]``, 0 removed first)."""
    return (ranks >= int(ranks.shape[1] * fraction)).reshape(maps.shape).to(maps.device)


@dataclass(frozen=True)
class RoadSettings:
    """Where and how ROAD removes (see the module doc)."""

    fractions: tuple[float, ...] = FRACTIONS
    noise: float = 0.01
    seed: int = 0
    rule: str = "count"


@dataclass(frozen=True)
class Road:
    """ROAD curves of one order for a batch of maps."""

    order: str
    fractions: tuple[float, ...]
    probability: torch.Tensor  # [N, F] the class's probability on the imputed image
    correct: torch.Tensor  # [N, F] bool: the class is still the top one

    def area(self) -> torch.Tensor:
        """``[N]``: the mean probability over the fractions (MoRF: lower is better)."""
        return self.probability.mean(1)


@torch.no_grad()
def road_curves(
    model: nn.Module,
    x: torch.Tensor,
    maps: torch.Tensor,
    classes: torch.Tensor,
    order: str = "morf",
    settings: RoadSettings | None = None,
) -> Road:
    """Class ``classes[i]``'s probability for image ``i`` with each fraction of its
    pixels removed by ``maps`` (``[N, H, W]``) in ``order`` and imputed (see the module
    doc).

    Raises:
        ValueError: a removal fraction outside (0, 1), an unknown order or rule, maps of
            another size than the images.
    """
    s = settings or RoadSettings()
    if maps.shape != (x.shape[0], *x.shape[2:]):
        raise ValueError(f"maps must be [N, H, W] = {(x.shape[0], *x.shape[2:])}, "
                         f"got {tuple(maps.shape)}")  # fmt: skip
    for fraction in s.fractions:
        _check(fraction, order, s.rule)  # every argument before any work
    generator: torch.Generator | np.random.RandomState
    ranked = ranks = None
    if s.rule == "count":  # one ranking for every fraction
        generator, ranked = np.random.RandomState(s.seed), ranking(maps, order)
        ranks = torch.argsort(ranked, dim=1)
    else:
        generator = torch.Generator().manual_seed(s.seed)
    n = len(x)
    device = model_device(model)
    forward = channels_last_twin(model) if device.type == "cpu" else model
    # one solve per fraction: a solve runs until its slowest image converges, so solving
    # the fractions together costs more iterations than it saves in calls
    probs = []
    for fraction in s.fractions:
        if ranks is None:
            keep = removal_mask(maps, fraction, order, s.rule)
        else:
            keep = _kept(ranks, fraction, maps)
        imputed = impute(x, keep, s.noise, generator, ranking=ranked)
        probs.append(_probabilities(model, forward, imputed))
    p = torch.stack(probs)  # [F, N, K]
    chosen = p.gather(2, classes.cpu()[None, :, None].expand(len(s.fractions), n, 1))[..., 0]
    correct = p.argmax(2) == classes.cpu()[None]
    return Road(order, tuple(s.fractions), chosen.t().contiguous(), correct.t().contiguous())


@in_precision("road")
def _probabilities(model: nn.Module, forward: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``[N, K]`` softmax of ``forward``'s logits (``model`` or its channels-last twin on
    the CPU), in fp32 on the CPU."""
    device = model_device(model)
    x = x.to(device)
    if device.type == "cpu":
        x = x.contiguous(memory_format=torch.channels_last)
    with eval_mode(forward), torch.no_grad():
        return forward(x).float().softmax(1).cpu()


__all__ = [
    "FRACTIONS",
    "ORDERS",
    "RULES",
    "Road",
    "RoadSettings",
    "impute",
    "ranking",
    "removal_mask",
    "road_curves",
]
