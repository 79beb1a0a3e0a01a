"""Grad-CAM element-wise (pytorch-grad-cam's ``GradCAMElementWise``): the ReLU of each
channel's gradient x activation before the sum over channels,
``map = sum_k relu(g_k * A_k)``, where HiResCAM sums first and rectifies after. A
channel whose positive and negative evidence cancel in HiResCAM still shows here."""

from __future__ import annotations

import torch

from convlens.interpret.maps.base import Site
from convlens.interpret.maps.cam import GradientMethod, class_gradients


class GradCAMElementWise(GradientMethod):
    """``map_c = sum_k relu(d logit_c / d A_k * A_k)`` (see the module doc)."""

    def weighted_maps(
        self,
        x: torch.Tensor,
        site: Site,
        features: torch.Tensor,
        logits: torch.Tensor,
        classes: torch.Tensor,
    ) -> torch.Tensor:
        grads = class_gradients(logits, features, classes)  # [N, T, C, h, w]
        return (grads * features.detach()[:, None]).clamp_min(0).sum(2)


__all__ = ["GradCAMElementWise"]
