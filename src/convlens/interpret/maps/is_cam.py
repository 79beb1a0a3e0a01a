"""IS-CAM (Naidu et al., 2020, "IS-CAM: Integrated Score-CAM for axiomatic-based
explanations"; torchcam's ``ISCAM``): Score-CAM whose masked image is scaled along a
path, the score averaged over ``samples`` points of it (an integral, as in Integrated
Gradients): ``w_k = softmax_k(1/N sum_i [y_c(s_i M_k x) - y_c(x)])`` with
``s_i = sum_{j <= i} j / N``, the running sum torchcam uses. The masks are Score-CAM's
(torchcam's convention); all ``samples x N x C`` images run in even batches."""

from __future__ import annotations

import torch
from torch import nn

from convlens.interpret.maps.base import Site
from convlens.interpret.maps.cam import ScoreCAM, masked_logits, score_weighted


class ISCAM(ScoreCAM):
    """IS-CAM (see the module doc)."""

    def __init__(
        self, model: nn.Module, layer: str | None = None, batch_size: int = 32, samples: int = 10
    ) -> None:
        super().__init__(model, layer, batch_size)
        if samples < 1:
            raise ValueError(f"`samples` must be at least 1, got {samples}")
        self.samples = samples

    def scales(self) -> torch.Tensor:
        """``[samples]``: the path's scale at each sample, torchcam's running sum."""
        out, coeff = [], 0.0
        for i in range(self.samples):
            coeff += (i + 1) / self.samples
            out.append(coeff)
        return torch.tensor(out, device="cpu")

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
        scale = self.scales().to(x.device)
        m = n * c

        def scaled(idx: torch.Tensor) -> torch.Tensor:
            item = idx % m
            return scale[idx // m, None, None, None] * (x[item // c] * masks[item, None])

        items = torch.arange(self.samples * m, device=x.device)
        ran = masked_logits(self.model, scaled, items, self.batch_size)  # [S * N * C, K]
        gain = ran.reshape(self.samples, n, c, -1) - logits[None, :, None, :]
        return score_weighted(gain.sum(0) / self.samples, classes, features)


__all__ = ["ISCAM"]
