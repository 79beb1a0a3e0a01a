"""KPCA-CAM (pytorch-grad-cam's ``KPCA_CAM``): Eigen-CAM with kernel PCA. The
activations at each position (``[hw, C]``, centred per channel) are projected on the
first principal component of a kernel (scikit-learn's ``KernelPCA``), so a non-linear
structure of the channels can lead the map where Eigen-CAM's linear direction misses
it. The map is the same for every class, as Eigen-CAM's; a ReLU keeps the positive side.

Options are scikit-learn's: ``kernel`` (``"sigmoid"`` by default, as the reference),
``gamma`` (``None``: ``1 / C``), ``degree`` (``"poly"``) and ``coef0`` (``"poly"`` and
``"sigmoid"``)."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from convlens.interpret.maps import registry
from convlens.interpret.maps.base import ActivationMapMethod, Site

KERNELS: tuple[str, ...] = registry.flags()["kernel"].choices or ()


class KPCACAM(ActivationMapMethod):
    """KPCA-CAM (see the module doc)."""

    relu = True

    def __init__(
        self,
        model: nn.Module,
        layer: str | None = None,
        kernel: str = "sigmoid",
        gamma: float | None = None,
        degree: int = 3,
        coef0: float = 1.0,
    ) -> None:
        super().__init__(model, layer)
        if kernel not in KERNELS:
            raise ValueError(f"unknown kernel {kernel!r}; choose one of {', '.join(KERNELS)}")
        if gamma is not None and not (math.isfinite(gamma) and gamma > 0):
            raise ValueError(f"`gamma` must be a positive number, got {gamma}")
        if degree < 1:
            raise ValueError(f"`degree` must be at least 1, got {degree}")
        self.kernel, self.gamma, self.degree, self.coef0 = kernel, gamma, degree, coef0

    @torch.no_grad()
    def weighted_maps(
        self,
        x: torch.Tensor,
        site: Site,
        features: torch.Tensor,
        logits: torch.Tensor,
        classes: torch.Tensor,
    ) -> torch.Tensor:
        from sklearn.decomposition import KernelPCA

        n, c, h, w = features.shape
        out = []
        # [C, hw] then a transposed view, as the reference lays the array out, so that
        # NumPy's sums run in the same order and give the same bits
        for a in features.nan_to_num(0.0).reshape(n, c, h * w).cpu().numpy():
            rows = a.transpose()
            centred = rows - rows.mean(axis=0)
            kpca = KernelPCA(
                n_components=1,
                kernel=self.kernel,
                gamma=self.gamma,
                degree=self.degree,
                coef0=self.coef0,
            )
            out.append(torch.from_numpy(np.float32(kpca.fit_transform(centred)[:, 0])))
        maps = torch.stack(out).to(features.device).reshape(n, 1, h, w)
        return maps.expand(n, classes.shape[1], h, w)


__all__ = ["KERNELS", "KPCACAM"]
