"""Eigen-Grad-CAM (pytorch-grad-cam's ``EigenGradCAM``): Eigen-CAM of the element-wise
product of gradient and activation. Where Eigen-CAM's map is the same for every class
(the activations' first principal direction), the gradient makes it class-specific."""

from __future__ import annotations

import torch

from convlens.interpret.maps.base import Site
from convlens.interpret.maps.cam import GradientMethod, class_gradients, first_projection


class EigenGradCAM(GradientMethod):
    """``map_c``: the positions' ``g_c * A`` vectors (``[hw, C]``, centred per channel)
    projected on their first principal direction, then a ReLU (the direction's sign is
    LAPACK's, as in pytorch-grad-cam)."""

    def weighted_maps(
        self,
        x: torch.Tensor,
        site: Site,
        features: torch.Tensor,
        logits: torch.Tensor,
        classes: torch.Tensor,
    ) -> torch.Tensor:
        grads = class_gradients(logits, features, classes)  # [N, T, C, h, w]
        n, t, _, h, w = grads.shape
        product = (grads * features.detach()[:, None]).flatten(3).transpose(2, 3)
        return first_projection(product.flatten(0, 1)).reshape(n, t, h, w)


__all__ = ["EigenGradCAM"]
