"""Smooth Grad-CAM++ (Omeiza et al., 2019, "Smooth Grad-CAM++: An Enhanced Inference
Level Visualization Technique for Deep Convolutional Neural Network Models"; torchcam's
``SmoothGradCAMpp``): Grad-CAM++ whose second and third derivatives are averaged over
``samples`` copies of the input with Gaussian noise (deviation ``stdev``) added,
``D2 = mean_s g_s^2``, ``D3 = mean_s g_s^3``::

    alpha_ij = D2_ij / (2 D2_ij + sum_ab D3_ab A_ab + eps)
    w_k = sum_ij alpha_ij relu(g_ij),   map = relu(sum_k w_k A'_k)

as torchcam 0.5 computes it: ``A`` is the clean input's activations, while ``g`` and
``A'`` are the gradients and activations of the **last** noisy copy (torchcam's hooks
keep the last pass). The noise of each copy is drawn for the whole batch ``[N, C, H, W]``
from a generator of ``seed``, in the order torchcam draws it from torch's global one,
so both give the same maps for the same seed. One forward pass per copy serves every
target class (torchcam runs them all again for each class)."""

from __future__ import annotations

import torch
from torch import nn

from convlens.interpret.maps.base import Site
from convlens.interpret.maps.cam import (
    GradientMethod,
    check_noise,
    class_gradients,
    torchcam_noise,
)


class SmoothGradCAMpp(GradientMethod):
    """Smooth Grad-CAM++ (see the module doc)."""

    def __init__(
        self,
        model: nn.Module,
        layer: str | None = None,
        samples: int = 4,
        stdev: float = 0.3,
        seed: int = 0,
    ) -> None:
        super().__init__(model, layer)
        check_noise(samples, stdev)
        self.samples, self.stdev, self.seed = samples, stdev, seed

    def weighted_maps(
        self,
        x: torch.Tensor,
        site: Site,
        features: torch.Tensor,
        logits: torch.Tensor,
        classes: torch.Tensor,
    ) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed)
        d2 = d3 = grads = acts = torch.zeros((), device=x.device)
        for _ in range(self.samples):
            noise = torchcam_noise(g, self.stdev, x.shape)
            noisy_logits, acts = self.forward(x + noise.to(x.device, x.dtype), site.layer)
            grads = class_gradients(noisy_logits, acts, classes)  # [N, T, C, h, w]
            d2, d3 = d2 + grads.pow(2), d3 + grads.pow(3)
        d2, d3 = d2 / self.samples, d3 / self.samples
        clean = features.detach()[:, None]  # [N, 1, C, h, w]
        alpha = d2 / (2 * d2 + (d3 * clean).sum((3, 4), keepdim=True) + 1e-8)
        weights = (alpha * grads.clamp_min(0)).sum((3, 4))  # [N, T, C]
        return (weights[..., None, None] * acts.detach()[:, None]).sum(2)


__all__ = ["SmoothGradCAMpp"]
