"""SS-CAM (Wang et al., 2020, "SS-CAM: Smoothed Score-CAM for Sharper Visual Feature
Localization"; torchcam's ``SSCAM``): Score-CAM with Gaussian noise (deviation
``stdev``) added to every upsampled mask, the score averaged over ``samples`` noisy
masks: ``w_k = softmax_k(1/N sum_i [y_c((M_k + d_i) x) - y_c(x)])``. The noise of
each sample is drawn for the whole batch of masks ``[N, C, H, W]`` from a generator of
``seed``, in the order torchcam draws it from torch's global one, so that both give the
same maps for the same seed."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from convlens.core.hooks import channels_last_twin
from convlens.interpret.maps.base import Site
from convlens.interpret.maps.cam import (
    ScoreCAM,
    check_noise,
    masked_logits,
    score_weighted,
    torchcam_noise,
)


class SSCAM(ScoreCAM):
    """SS-CAM (see the module doc)."""

    def __init__(
        self,
        model: nn.Module,
        layer: str | None = None,
        batch_size: int = 32,
        samples: int = 35,
        stdev: float = 2.0,
        seed: int = 0,
    ) -> None:
        super().__init__(model, layer, batch_size)
        check_noise(samples, stdev)
        self.samples, self.stdev, self.seed = samples, stdev, seed

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
        masks = self.masks(features, (x.shape[2], x.shape[3]))  # [N, C, H, W]
        g = torch.Generator().manual_seed(self.seed)
        items = torch.arange(n * c, device=x.device)
        total = torch.zeros(n * c, logits.shape[1], device=x.device)
        forward = channels_last_twin(self.model) if x.device.type == "cpu" else self.model
        for _ in range(self.samples):
            noise = torchcam_noise(g, self.stdev, masks.shape)
            noisy = (masks + noise.to(masks.device)).flatten(0, 1)
            ran = masked_logits(forward, self._inputs(x, noisy, c), items, self.batch_size,
                                twin=False)  # fmt: skip
            total += ran - logits[items // c]
        return score_weighted((total / self.samples).reshape(n, c, -1), classes, features)

    @staticmethod
    def _inputs(
        x: torch.Tensor, noisy: torch.Tensor, c: int
    ) -> Callable[[torch.Tensor], torch.Tensor]:
        return lambda idx: x[idx // c] * noisy[idx, None]


__all__ = ["SSCAM"]
