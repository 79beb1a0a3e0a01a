"""Shapley-CAM (Cai et al., 2025, "CAMs as Shapley Value-based Explainers";
pytorch-grad-cam's ``ShapleyCAM``): channel weights from the gradient and the
Hessian-vector product of the class score at the layer's activations ``A``,
``w_k = mean_ij (g - 1/2 H A)_k``, a second-order estimate of each channel's Shapley
value; then ``relu(sum_k w_k A_k)``.

On a network that is piecewise linear after the layer (ReLU, max-pooling, linear
layers) the Hessian of a logit is zero and Shapley-CAM equals Grad-CAM. The paper pairs
it with its ReST score, ``y_c + log softmax(y)_c`` (``objective="rest"``, the
reference's ``ClassifierOutputReST``), whose softmax gives a Hessian everywhere; the
default, the logit, is the reference's default target."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from convlens.interpret.maps import registry
from convlens.interpret.maps.base import Site
from convlens.interpret.maps.cam import GradientMethod

OBJECTIVES: tuple[str, ...] = registry.flags()["objective"].choices or ()


def class_score(logits: torch.Tensor, target: torch.Tensor, objective: str) -> torch.Tensor:
    """``[N]``: the score of class ``target[i]`` of each image: its logit, or with
    ``"rest"`` the logit less the cross-entropy, ``y_c + log softmax(y)_c``."""
    picked = logits.gather(1, target[:, None])[:, 0]
    if objective == "logit":
        return picked
    return picked - F.cross_entropy(logits, target, reduction="none")


class ShapleyCAM(GradientMethod):
    """Shapley-CAM (see the module doc); ``objective``: ``"logit"`` or ``"rest"``."""

    def __init__(
        self, model: nn.Module, layer: str | None = None, objective: str = "logit"
    ) -> None:
        super().__init__(model, layer)
        if objective not in OBJECTIVES:
            raise ValueError(
                f"unknown objective {objective!r}; choose one of {', '.join(OBJECTIVES)}"
            )
        self.objective = objective

    def channel_weights(
        self, site: Site, features: torch.Tensor, logits: torch.Tensor, classes: torch.Tensor
    ) -> torch.Tensor:
        acts = features.detach()
        weights = []
        for t in range(classes.shape[1]):
            score = class_score(logits, classes[:, t], self.objective).sum()
            (g,) = torch.autograd.grad(score, features, create_graph=True)
            hvp = None
            if g.requires_grad:  # else the score is linear in the layer: H A = 0
                (hvp,) = torch.autograd.grad(
                    g, features, grad_outputs=acts, retain_graph=True, allow_unused=True
                )
            step = g.detach() if hvp is None else g.detach() - 0.5 * hvp
            weights.append(step.float().mean((2, 3)))
        return torch.stack(weights, 1)  # [N, T, C]


__all__ = ["OBJECTIVES", "ShapleyCAM", "class_score"]
