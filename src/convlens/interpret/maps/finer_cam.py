"""Finer-CAM (Zhang et al., CVPR 2025, "Finer-CAM: Spotting the Difference Reveals
Finer Details for Visual Explanation"; pytorch-grad-cam's and torchcam's ``FinerCAM``):
a gradient CAM of a contrast instead of a class score, so the map shows what tells the
class apart from the classes the model confuses it with, not everything they share.
The comparison classes are the ``comparisons`` ones whose logits are nearest the
target's (or ``compare_with``, the same classes for every image).

The two references contrast differently (``reference``):

- ``"pytorch-grad-cam"`` (the paper's authors' code, default): the comparisons weighted
  by their probability, ``sum_j p_j (y_c - alpha y_j) / sum_j p_j`` with ``p`` the
  softmax of the logits (its gradient flows through ``p`` too), ``alpha = 1``;
- ``"torchcam"``: ``y_c - alpha mean_j y_j``, ``alpha = 0.6``.

The base method (``base``) turns the contrast's gradient into the map: Grad-CAM by
default, or Grad-CAM++, XGrad-CAM, LayerCAM or HiResCAM."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from convlens.interpret.maps import registry
from convlens.interpret.maps.base import Site
from convlens.interpret.maps.cam import GradientMethod, gradient_base

DEFAULT_ALPHA = {"pytorch-grad-cam": 1.0, "torchcam": 0.6}


class FinerCAM(GradientMethod):
    """Finer-CAM (see the module doc)."""

    def __init__(
        self,
        model: nn.Module,
        layer: str | None = None,
        base: str = registry.GRADIENT_FALLBACK,
        alpha: float | None = None,
        comparisons: int = 3,
        compare_with: Sequence[int] | None = None,
        reference: str = "pytorch-grad-cam",
    ) -> None:
        super().__init__(model, layer)
        self.base = gradient_base(model, layer, base, reference, "Finer-CAM")
        alpha = DEFAULT_ALPHA[reference] if alpha is None else float(alpha)
        if not (math.isfinite(alpha) and alpha >= 0):
            raise ValueError(f"`alpha` must be a number of 0 or more, got {alpha}")
        if comparisons < 1:
            raise ValueError(f"`comparisons` must be at least 1, got {comparisons}")
        if compare_with is not None and len(compare_with) == 0:
            raise ValueError("`compare_with` names no class; give one or more class indices")
        self.reference, self.alpha, self.comparisons = reference, alpha, comparisons
        self.compare_with = None if compare_with is None else tuple(int(c) for c in compare_with)

    def references(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``[N, J]``: the comparison classes of each image's ``target`` class."""
        n, k = logits.shape
        if self.compare_with is None:
            if k < 2:
                raise ValueError("Finer-CAM needs a model of two classes or more to compare")
            distance = (logits - logits.gather(1, target[:, None])).abs()
            distance.scatter_(1, target[:, None], float("inf"))
            return distance.topk(min(self.comparisons, k - 1), 1, largest=False).indices
        bad = [c for c in self.compare_with if not 0 <= c < k]
        if bad:
            raise ValueError(
                f"comparison class {bad[0]} is out of range 0..{k - 1} (`compare_with`)"
            )
        chosen = torch.tensor(self.compare_with, device=logits.device).expand(n, -1)
        clash = (chosen == target[:, None]).any(1)
        if clash.any():
            c = int(target[clash][0])
            raise ValueError(
                f"class {c} is both a target and a comparison class; leave it out of `compare_with`"
            )
        return chosen

    def contrast(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``[N]``: the contrast of each image's ``target`` class with its comparisons."""
        refs = self.references(logits.detach(), target)
        y_c = logits.gather(1, target[:, None])
        y_j = logits.gather(1, refs)
        if self.reference == "torchcam":
            return (y_c - self.alpha * y_j.mean(1, keepdim=True))[:, 0]
        p = logits.softmax(1).gather(1, refs)
        return (p * (y_c - self.alpha * y_j)).sum(1) / (p.sum(1) + 1e-9)

    def channel_weights(
        self, site: Site, features: torch.Tensor, logits: torch.Tensor, classes: torch.Tensor
    ) -> torch.Tensor:
        last = classes.shape[1] - 1
        grads = []
        for t in range(classes.shape[1]):
            score = self.contrast(logits, classes[:, t]).sum()
            (g,) = torch.autograd.grad(score, features, retain_graph=t < last)
            grads.append(g.float())
        return self.base.weights_from(torch.stack(grads, 1), features.detach())


__all__ = ["DEFAULT_ALPHA", "FinerCAM"]
