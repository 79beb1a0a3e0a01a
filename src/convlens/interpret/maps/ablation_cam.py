"""Ablation-CAM (Desai and Ramaswamy, WACV 2020; pytorch-grad-cam's ``AblationCAM``):
gradient-free channel weights from the drop of the class score when the channel is
removed, ``w_k = (y_c - y_c^{-k}) / y_c``, then ``relu(sum_k w_k A_k)``.

A channel is removed by setting it to zero, or, when the image's activations at the
layer have no zero (a layer before its ReLU), to their minimum less 1e7, as the
reference does. Every (image, channel) pass runs once and gives the scores of every
target class at once (the reference runs all channels again for each class); a channel
that is zero everywhere changes nothing when removed, so its weight is 0 without a
pass."""

from __future__ import annotations

import torch
from torch import nn

from convlens.interpret.maps.base import ActivationMapMethod, Site
from convlens.interpret.maps.cam import masked_logits

ABLATION_VALUE = 1e7  # below the minimum, for a layer whose activations have no zero


class AblationCAM(ActivationMapMethod):
    """Ablation-CAM (see the module doc); ``batch_size`` ablated copies per pass."""

    relu = True

    def __init__(self, model: nn.Module, layer: str | None = None, batch_size: int = 32) -> None:
        super().__init__(model, layer)
        if batch_size < 1:
            raise ValueError(f"`batch_size` must be at least 1, got {batch_size}")
        self.batch_size = batch_size

    @torch.no_grad()
    def weighted_maps(
        self,
        x: torch.Tensor,
        site: Site,
        features: torch.Tensor,
        logits: torch.Tensor,
        classes: torch.Tensor,
    ) -> torch.Tensor:
        acts = features.detach()
        n, c = acts.shape[:2]
        low = acts.flatten(1).amin(1)  # [N]
        removed = torch.where(low == 0, torch.zeros_like(low), low - ABLATION_VALUE)
        changes = ((acts != removed[:, None, None, None]).flatten(2).any(2)).flatten()
        items = changes.nonzero().flatten()  # (image, channel) pairs whose removal matters

        def ablated(idx: torch.Tensor) -> torch.Tensor:
            out = acts[idx // c].clone()
            out[torch.arange(len(idx), device=idx.device), idx % c] = removed[idx // c, None, None]
            return out

        scores = logits.gather(1, classes)  # [N, T]
        ablated_scores = scores[:, None, :].repeat(1, c, 1).reshape(n * c, -1)  # unchanged
        if len(items):
            ran = masked_logits(self.model, lambda idx: x[idx // c], items, self.batch_size,
                                layer_output=(site.layer, ablated))  # fmt: skip
            ablated_scores[items] = ran.gather(1, classes[items // c])
        drop = (scores[:, None, :] - ablated_scores.reshape(n, c, -1)) / scores[:, None, :]
        alpha = drop.transpose(1, 2)  # [N, T, C]
        return (alpha[..., None, None] * acts[:, None]).sum(2)


__all__ = ["ABLATION_VALUE", "AblationCAM"]
