"""The parts of a training step that a config chooses, each behind one small interface,
so that :func:`convlens.training.loop.train_one_epoch` reads as the steps of a step and
a new idea is one new part, not one more argument and branch in the hot loop:

- a **batch maker** turns stored images into the batch a step sees (augmentation,
  progressive resizing, memory format): :class:`BatchMaker`;
- a **batch selector** says which images of the batch the step trains on:
  :class:`AllImages`, :class:`FreshHardest` (selective backprop by a no-grad ranking
  pass) and :class:`RecordedHardest` (stale selective backprop, by each image's last
  known loss);
- a **step hook** runs after every optimiser step: :class:`WeightAverage` and
  :class:`Lookahead`.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from convlens.core.device import autocast
from convlens.training.augment import augment_batch

# per-image losses of logits [N, K] against labels [N]
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


# ----------------------------------------------------------------------------- batch maker


@dataclass(frozen=True)
class BatchMaker:
    """Makes a training batch from float images: augmentation, then resizing, then the
    device and its memory format.

    Attributes:
        augment: ``'none'`` or a '+'-joined choice of flip (or altflip), crop, erase.
        crop_pad: pixels of padding for random-translation crops.
        flips: with ``altflip``, which of all the training images to mirror (bool ``[N]``).
        size: resize batches to ``size`` x ``size`` (bilinear, antialiased); ``None``
            keeps them as they are.
    """

    augment: str = "none"
    crop_pad: int = 2
    flips: torch.Tensor | None = None
    size: int | None = None

    def __call__(
        self, images: torch.Tensor, idx: torch.Tensor, g: torch.Generator, device: torch.device
    ) -> torch.Tensor:
        flip = self.flips[idx] if self.flips is not None else None
        x = augment_batch(images[idx], self.augment, self.crop_pad, g, flip)
        x = x.to(device, non_blocking=True)
        if self.size is not None and self.size != x.shape[-1]:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", antialias=True)
        return channels_last(x)


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """On the CPU, the channels-last layout that oneDNN's convolutions run fastest on."""
    if x.device.type == "cpu":
        return x.contiguous(memory_format=torch.channels_last)
    return x


# ----------------------------------------------------------------------------- batch selectors


class Selection(NamedTuple):
    """A selector's answer for one batch."""

    keep: torch.Tensor | None  # indices of the batch to step on; None: the whole batch
    # a ranking pass's logits and per-image losses over the whole batch, reported for the
    # epoch in place of the step's; None: the step's own are reported
    logits: torch.Tensor | None = None
    losses: torch.Tensor | None = None


class BatchSelector(Protocol):
    """Which images of each batch a step trains on.

    ``per_image`` says whether ``trained`` needs the step's per-image losses (the step
    then computes them unreduced and averages them itself).
    """

    per_image: bool

    def select(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor, loss: LossFn
    ) -> Selection: ...

    def trained(self, idx: torch.Tensor, keep: torch.Tensor | None, losses: torch.Tensor) -> None:
        """Called after the step with the per-image losses of the images stepped on
        (only when ``per_image``)."""
        ...


class AllImages:
    """Every image of every batch. With ``image_losses`` (float ``[N]`` over the training
    set, on the CPU) it records each image's training loss, so that an epoch of
    :class:`RecordedHardest` can follow."""

    def __init__(self, image_losses: torch.Tensor | None = None) -> None:
        self.image_losses = image_losses
        self.per_image = image_losses is not None

    def select(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor, loss: LossFn
    ) -> Selection:
        return Selection(None)

    def trained(self, idx: torch.Tensor, keep: torch.Tensor | None, losses: torch.Tensor) -> None:
        if self.image_losses is not None:
            self.image_losses[idx] = losses.detach().cpu()


class FreshHardest:
    """Selective backprop (Jiang et al. 2019): a no-grad forward pass in training mode
    ranks the batch by loss, and the step trains on the ``fraction`` with the highest
    losses. With ``image_losses`` the ranking pass's losses are recorded for every image."""

    per_image = False

    def __init__(
        self,
        fraction: float,
        amp_dtype: torch.dtype | None = None,
        image_losses: torch.Tensor | None = None,
    ) -> None:
        self.fraction = fraction
        self.amp_dtype = amp_dtype
        self.image_losses = image_losses

    def select(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor, loss: LossFn
    ) -> Selection:
        with frozen_batchnorm_stats(model):
            logits = ranking_logits(model, x, self.amp_dtype)
        losses = loss(logits, y)
        if self.image_losses is not None:
            self.image_losses[idx] = losses.cpu()
        return Selection(hardest(losses, self.fraction), logits, losses)

    def trained(self, idx: torch.Tensor, keep: torch.Tensor | None, losses: torch.Tensor) -> None:
        pass


class RecordedHardest:
    """Stale selective backprop: the step trains on the ``fraction`` of the batch whose
    recorded losses (``image_losses``, float ``[N]`` on the CPU) are highest, with no
    extra pass, and records the losses of the images it trained on."""

    per_image = True

    def __init__(self, fraction: float, image_losses: torch.Tensor) -> None:
        self.fraction = fraction
        self.image_losses = image_losses

    def select(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor, loss: LossFn
    ) -> Selection:
        return Selection(hardest(self.image_losses[idx], self.fraction).to(x.device))

    def trained(self, idx: torch.Tensor, keep: torch.Tensor | None, losses: torch.Tensor) -> None:
        kept = idx if keep is None else idx[keep.cpu()]
        self.image_losses[kept] = losses.detach().cpu()


@torch.no_grad()
def ranking_logits(
    model: nn.Module, x: torch.Tensor, amp_dtype: torch.dtype | None
) -> torch.Tensor:
    """Logits of a batch in training mode (BatchNorm normalises by the batch, as the
    step will)."""
    with autocast(x.device, amp_dtype):
        return model(x).float()


@contextlib.contextmanager
def frozen_batchnorm_stats(model: nn.Module) -> Iterator[None]:
    """Forward passes in training mode that leave BatchNorm's running statistics (and
    batch counts) as they were."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m.momentum, {k: v.clone() for k, v in m.named_buffers()}) for m in norms]
    for m in norms:
        m.momentum = 0.0  # running = (1 - 0) * running + 0 * batch: unchanged
    try:
        yield
    finally:
        for m, (momentum, buffers) in zip(norms, saved, strict=True):
            m.momentum = momentum
            for name, value in m.named_buffers():
                value.copy_(buffers[name])


def hardest(losses: torch.Tensor, fraction: float) -> torch.Tensor:
    """Indices of the ``fraction`` of a batch with the highest per-image ``losses``."""
    k = max(1, round(fraction * losses.shape[0]))
    return losses.topk(k, sorted=False).indices


# ----------------------------------------------------------------------------- step hooks


class StepHook(Protocol):
    """Runs after every optimiser step; ``step`` is the 0-based global step."""

    def after_step(self, model: nn.Module, step: int) -> None: ...


class WeightAverage:
    """Exponential moving average of a model's parameters and buffers.

    ``avg = d * avg + (1 - d) * current`` after every step, with the decay ramped
    up as ``min(d, (1 + n) / (10 + n))`` so early steps do not dominate.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.updates = 0
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def after_step(self, model: nn.Module, step: int) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        avg = self.model.state_dict()
        for k, v in model.state_dict().items():
            if v.dtype.is_floating_point:
                avg[k].lerp_(v, 1.0 - d)
            else:
                avg[k].copy_(v)

    def state_dict(self) -> dict[str, Any]:
        return {"updates": self.updates, "model": self.model.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.updates = int(state["updates"])
        self.model.load_state_dict(state["model"])


class Lookahead:
    """Lookahead as airbench uses it: every ``every`` steps the slow copy of the
    parameters and buffers moves toward the model's, ``slow = d * slow + (1 - d) *
    model``, and the model takes the slow values. The decay ``d`` rises as ``decay *
    (step / total)^3``, so early training is plain SGD; at the last step the model takes
    the slow values unmixed."""

    def __init__(self, model: nn.Module, decay: float, total_steps: int, every: int = 5) -> None:
        self.decay = decay
        self.total_steps = total_steps
        self.every = every
        self.slow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def after_step(self, model: nn.Module, step: int) -> None:
        last = step + 1 == self.total_steps
        if (step + 1) % self.every and not last:
            return
        d = 1.0 if last else self.decay * ((step + 1) / self.total_steps) ** 3
        for k, v in model.state_dict().items():
            slow = self.slow[k]
            if v.dtype.is_floating_point:
                slow.lerp_(v, 1.0 - d)
            else:
                slow.copy_(v)
            v.copy_(slow)

    def state_dict(self) -> dict[str, Any]:
        return {"slow": self.slow}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for k, v in state["slow"].items():
            self.slow[k].copy_(v)


__all__ = [
    "AllImages",
    "BatchMaker",
    "BatchSelector",
    "FreshHardest",
    "Lookahead",
    "LossFn",
    "RecordedHardest",
    "Selection",
    "StepHook",
    "WeightAverage",
    "channels_last",
    "frozen_batchnorm_stats",
    "hardest",
    "ranking_logits",
]
