"""Discover the concepts a layer uses: directions across its units, found by factorising
its non-negative activations over a data set, each with its exemplars, its importance for
each class and its map on an image.

- **Factorisation** (scikit-learn's ``NMF``): the activations ``A`` (``[n, C]``: every
  position of every image, as Collins et al.'s Deep Feature Factorization, ECCV 2018; or,
  with ``patches``, the spatial mean of the layer for image patches resized to the input
  size, as Fel et al.'s CRAFT, CVPR 2023) are written ``A ~ U H`` with ``U, H >= 0``; the
  rows of ``H`` (``[k, C]``) are the concepts, ``U`` says how much of each is where. The
  relative reconstruction error ``|A - U H| / |A|`` helps choose ``k``.
- **Coefficients on any image**: with ``H`` fixed, each position's ``U`` is NMF's
  ``transform`` (non-negative least squares), so a concept has a map on every image
  (:func:`concept_maps`).
- **Importance for a class**: CRAFT's total Sobol indices (:mod:`.sobol`): the concepts'
  coefficient maps are scaled by random masks, the layer's output replaced by ``U' H``,
  and the variance of the class's logit apportioned; and *gradient x concept*: the
  class logit's gradient along each concept times its coefficient, summed over positions.
- **C-Deletion and C-Insertion** (CRAFT): the class's probability as the most important
  concepts are removed from (or added to) the reconstructed activations, one by one; and,
  as a control, the probability with the most important concept's direction replaced by
  a random non-negative direction of the same length.

Everything is computed on the CPU from activations gathered in batches where the model
is (the factorisation is scikit-learn's); the passes that score reconstructed
activations run where the model is. For a layer that feeds a global-average-pooling +
linear head (``features`` of fashion-cnn, ``layer4`` of a ResNet) those passes are the
head's algebra and cost nothing; for any other layer each mask is one pass of the model
with the layer's output replaced, so ``importance_images`` bounds their number.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.decomposition import NMF
from sklearn.exceptions import ConvergenceWarning
from torch import nn

from convlens.core.device import model_device
from convlens.core.hooks import capture, eval_mode, get_layer, recording, replaced
from convlens.core.precision import in_precision
from convlens.interpret.concepts import sobol, tcav
from convlens.interpret.heads import GapHead, NotGapHeadError, find_gap_head


class NegativeActivationsError(ValueError):
    """A layer's activations have negative values, so they cannot be factorised into
    non-negative parts."""


@dataclass(frozen=True)
class ConceptSettings:
    """How :func:`concepts` factorises and scores.

    Attributes:
        k: concepts per factorisation.
        patches: ``None``: factorise every position of the layer's maps (Deep Feature
            Factorization); a side in input pixels: factorise the layer's spatial mean
            for patches of that side, cut at 80% strides and resized to the input (CRAFT).
        shift: add ``-min`` of the activations when they have negative values (and remove
            it before the model reads a reconstruction); off, such a layer is an error.
        top: exemplars per concept.
        designs: the Sobol design's size (CRAFT's ``nb_design``); each image costs
            ``(k + 2) * designs`` scored reconstructions.
        importance_images: images of a class that its importance and curves are averaged
            over (the first ones; ``None``: all).
        max_iter: NMF's iterations at most.
        seed: NMF's and the random control direction's seed.
        batch_size: images per forward pass.
    """

    k: int = 10
    patches: int | None = None
    shift: bool = False
    top: int = 8
    designs: int = 32
    importance_images: int | None = 500
    max_iter: int = 400
    seed: int = 0
    batch_size: int = 256


@dataclass(frozen=True)
class ConceptGroup:
    """The concepts of one factorisation: of one class's images, or of all.

    ``classes`` are the classes scored: importances and curves have one row each.
    """

    group: int | None  # the class whose images were factorised (None: every image)
    bank: torch.Tensor  # [k, C] the concepts' directions in the layer
    error: float  # relative reconstruction error of the factorised activations
    classes: tuple[int, ...]
    sobol: torch.Tensor  # [classes, k] total Sobol index, mean over the class's images
    gradient: torch.Tensor  # [classes, k] gradient x concept, mean over the class's images
    deletion: torch.Tensor  # [classes, k + 1] probability, the most important removed first
    insertion: torch.Tensor  # [classes, k + 1] probability, the most important added first
    random_insertion: torch.Tensor  # [classes] the first concept's direction made random
    exemplars: torch.Tensor  # [k, top] image indices, the strongest first
    boxes: torch.Tensor  # [k, top, 4] each exemplar's region (y0, x0, y1, x1), input pixels

    def ranking(self, c: int) -> list[int]:
        """The concepts by their Sobol importance for class ``c``, most important first."""
        row = self.classes.index(c)
        return [int(i) for i in torch.argsort(self.sobol[row], descending=True, stable=True)]

    def table(self, class_names: Sequence[str] = ()) -> str:
        """A Markdown table: per scored class, its three most important concepts and the
        C-Deletion / C-Insertion areas."""

        def name(c: int | None) -> str:
            if c is None:
                return "all images"
            return class_names[c] if c < len(class_names) else str(c)

        rows = [
            f"**{name(self.group)}**: {len(self.bank)} concepts, reconstruction error "
            f"{self.error:.3f}",
            "",
            "| class | most important (Sobol) | C-Deletion | C-Insertion | first concept | "
            "random direction |",
            "|---|---|---|---|---|---|",
        ]
        for row, c in enumerate(self.classes):
            top = ", ".join(f"{i} ({self.sobol[row, i]:.2f})" for i in self.ranking(c)[:3])
            rows.append(
                f"| {name(c)} | {top} | {self.deletion[row].mean():.3f} | "
                f"{self.insertion[row].mean():.3f} | {self.insertion[row, 1]:.3f} | "
                f"{self.random_insertion[row]:.3f} |"
            )
        return "\n".join(rows)


@dataclass(frozen=True)
class Concepts:
    """What :func:`concepts` found in ``layer``."""

    layer: str
    groups: list[ConceptGroup]
    shift: float  # added to the activations before factorising (0 for a ReLU's output)
    settings: ConceptSettings


@in_precision("concepts")
def layer_maps(
    model: nn.Module, x: torch.Tensor, layer: str, batch_size: int = 256
) -> torch.Tensor:
    """``[N, C, h, w]``: ``layer``'s output for the images ``x``, on the CPU, in fp32."""
    device = model_device(model)
    parts = []
    with eval_mode(model), torch.no_grad(), capture(model, layer) as store:
        for start in range(0, x.shape[0], batch_size):
            model(x[start : start + batch_size].to(device))
            parts.append(store[layer].float().cpu())
    maps = torch.cat(parts)
    if maps.ndim != 4:
        raise ValueError(
            f"layer {layer!r} gives {tuple(maps.shape[1:])} per image, not [C, h, w] maps: "
            "choose a convolutional layer"
        )
    return maps


def patch_inputs(x: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(patches, origin)``: CRAFT's crops of side ``size`` at strides of 80% of it,
    each resized to the input's size (``[N * P, c, H, W]``), and each crop's image and
    box (``[N * P, 5]``: image, y0, x0, y1, x1)."""
    n, _, h, w = x.shape
    if not 1 <= size <= min(h, w):
        raise ValueError(
            f"`patches` of {size} px do not fit images of {h}x{w}: give 1..{min(h, w)}"
        )
    stride = max(1, int(size * 0.8))
    ys, xs = range(0, h - size + 1, stride), range(0, w - size + 1, stride)
    crops = [x[:, :, y : y + size, x0 : x0 + size] for y in ys for x0 in xs]
    patches = torch.stack(crops, 1).flatten(0, 1)
    resized = F.interpolate(patches, size=(h, w), mode="bilinear", align_corners=False)
    boxes = torch.tensor([[y, x0, y + size, x0 + size] for y in ys for x0 in xs], device="cpu")
    images = torch.arange(n, device="cpu").repeat_interleave(len(boxes))
    return resized, torch.cat([images[:, None], boxes.repeat(n, 1)], 1)


def factorise(
    acts: torch.Tensor, k: int, settings: ConceptSettings
) -> tuple[NMF, torch.Tensor, float]:
    """scikit-learn's NMF of ``acts`` (``[n, C]``, non-negative) into ``k`` concepts:
    the fitted NMF (its ``components_`` are the concepts), the coefficients ``U``
    (``[n, k]``) and the relative reconstruction error."""
    nmf = NMF(n_components=k, init="nndsvda", max_iter=settings.max_iter,
              random_state=settings.seed)  # fmt: skip
    data = acts.numpy().astype(np.float32)
    with warnings.catch_warnings():  # the error is reported; more iterations are a setting
        warnings.simplefilter("ignore", ConvergenceWarning)
        u = nmf.fit_transform(data)
    error = float(np.linalg.norm(data - u @ nmf.components_)) / max(
        float(np.linalg.norm(data)), 1e-12
    )
    return nmf, torch.from_numpy(u).float(), error


def coefficients(nmf: NMF, maps: torch.Tensor) -> torch.Tensor:
    """``[N, k, h, w]``: each position's concept coefficients (NMF's ``transform`` with
    the concepts fixed) for the layer's maps ``[N, C, h, w]``."""
    n, c, h, w = maps.shape
    rows = maps.permute(0, 2, 3, 1).reshape(-1, c).numpy().astype(nmf.components_.dtype)
    u = torch.from_numpy(nmf.transform(rows)).float()
    return u.reshape(n, h, w, -1).permute(0, 3, 1, 2).contiguous()


def concept_maps(
    model: nn.Module, x: torch.Tensor, layer: str, bank: torch.Tensor, shift: float = 0.0
) -> torch.Tensor:
    """``[N, k, h, w]``: where each concept (a row of ``bank``) is in the images ``x``,
    at the layer's resolution: the non-negative least-squares coefficients of each
    position's activations (plus ``shift``) on the concepts."""
    maps = layer_maps(model, x, layer) + shift
    return coefficients(_fixed(bank), maps)


def _fixed(bank: torch.Tensor) -> NMF:
    """An NMF whose concepts are ``bank``, for ``transform`` alone."""
    nmf = NMF(n_components=bank.shape[0], max_iter=400)
    nmf.components_ = bank.numpy().astype(np.float32)
    nmf.n_components_ = bank.shape[0]
    nmf.n_features_in_ = bank.shape[1]
    return nmf


class _Scorer:
    """The model's logits for reconstructed activations of ``layer``: the head's algebra
    when the layer feeds a GAP + linear head, else the model with the layer replaced."""

    def __init__(self, model: nn.Module, layer: str, probe: torch.Tensor, shift: float) -> None:
        self.model, self.layer, self.shift = model, layer, shift
        try:
            head: GapHead | None = find_gap_head(model, probe, layer)
        except NotGapHeadError:
            head = None
        self.head = head if head is not None and head.layer == layer else None
        if self.head is not None:
            self.head = GapHead(
                layer,
                self.head.fc,
                self.head.weight.cpu(),
                None if self.head.bias is None else self.head.bias.cpu(),
            )

    def logits(self, x: torch.Tensor, u: torch.Tensor, bank: torch.Tensor,
               masks: torch.Tensor) -> torch.Tensor:  # fmt: skip
        """``[M, classes]``: logits of one image ``x`` (``[1, c, H, W]``) when its
        coefficient maps ``u`` (``[k, h, w]``) are scaled by each row of ``masks``
        (``[M, k]``) and multiplied back onto ``bank``."""
        if self.head is not None:  # the head averages: so may the reconstruction
            pooled = masks @ (u.mean((1, 2))[:, None] * bank) - self.shift
            logits = pooled @ self.head.weight.T
            return logits if self.head.bias is None else logits + self.head.bias
        out = []
        for start in range(0, len(masks), 64):
            m = masks[start : start + 64]
            acts = torch.einsum("mk,khw,kc->mchw", m, u, bank)
            out.append(_replaced_logits(self.model, self.layer, x, acts - self.shift))
        return torch.cat(out)

    def gradient(self, x: torch.Tensor, c: int, shape: torch.Size) -> torch.Tensor:
        """``[N, C, h, w]``: the gradient of class ``c``'s logit at the layer's output for
        the images ``x`` (for a GAP + linear head: the class's weights over ``h w``)."""
        if self.head is not None:
            n, ch, h, w = shape
            return (self.head.weight[c] / (h * w))[None, :, None, None].expand(n, ch, h, w)
        return tcav.layer_gradients(self.model, x, [self.layer], c)[self.layer].reshape(shape)


@in_precision("concepts")
def _replaced_logits(
    model: nn.Module, layer: str, x: torch.Tensor, acts: torch.Tensor
) -> torch.Tensor:
    """``[M, classes]``: the model's logits with ``layer``'s output ``acts`` (``[M, C, h,
    w]``); the input ``x`` (one image) only gives the layers before it their shapes."""
    device = model_device(model)
    out = acts.to(device)
    with eval_mode(model), torch.no_grad(), replaced(get_layer(model, layer), lambda: out):
        return model(x.to(device).expand(len(acts), *x.shape[1:])).float().cpu()


def concepts(
    model: nn.Module,
    x: torch.Tensor,
    layer: str,
    labels: torch.Tensor,
    classes: Sequence[int] | None = None,
    settings: ConceptSettings | None = None,
    *,
    progress: Callable[[str, int, int], None] | None = None,
) -> Concepts:
    """Find ``settings.k`` concepts in ``layer`` from the images ``x`` (``[N, c, H, W]``
    model inputs) with class ``labels`` (``[N]``: the data's labels, or the model's
    predictions), and score them (see the module doc).

    Args:
        classes: ``None``: one factorisation of every image, scored for every class;
            a list: one factorisation per class, of that class's images, scored for it
            (CRAFT's way).
        progress: called as ``progress(step, done, total)``.

    Raises:
        NegativeActivationsError: the layer has negative activations and ``shift`` is
            off (the message names a later layer that has none).
        ValueError: an unknown layer, ``k`` out of 1..channels, an unknown class, a class
            with no image, bad patches.
    """
    settings = settings or ConceptSettings()
    report = progress or (lambda step, done, total: None)
    get_layer(model, layer)
    if labels.shape != (len(x),):
        raise ValueError(f"{len(x)} images but labels of shape {tuple(labels.shape)}")
    report("activations", 0, 1)
    maps = layer_maps(model, x, layer, settings.batch_size)
    num_classes = _num_classes(model, x[:1])
    _check(settings, maps, classes, labels, num_classes)
    shift = _shift(model, x, layer, maps, settings)
    maps = maps + shift
    scorer = _Scorer(model, layer, x[:1], shift)
    plan = [None] if classes is None else [int(c) for c in classes]
    groups = []
    for done, group in enumerate(plan):
        report("concepts", done, len(plan))
        members = (
            torch.arange(len(x), device="cpu")
            if group is None
            else torch.nonzero(labels == group)[:, 0]
        )
        scored = tuple(range(num_classes)) if group is None else (group,)
        groups.append(_group(model, x, maps, members, labels, group, scored, scorer, settings))
    report("concepts", len(plan), len(plan))
    return Concepts(layer, groups, shift, settings)


def _num_classes(model: nn.Module, probe: torch.Tensor) -> int:
    with eval_mode(model), torch.no_grad():
        out = model(probe.to(model_device(model)))
    return int(out.shape[1])


def _check(
    settings: ConceptSettings,
    maps: torch.Tensor,
    classes: Sequence[int] | None,
    labels: torch.Tensor,
    num_classes: int,
) -> None:
    channels = maps.shape[1]
    if not 1 <= settings.k <= channels:
        raise ValueError(f"`k` = {settings.k} concepts, but the layer has {channels} channels: "
                         f"give 1..{channels}")  # fmt: skip
    if settings.top < 1 or settings.designs < 2:
        raise ValueError("give 1 exemplar or more and a Sobol design of 2 points or more")
    for c in classes or ():
        if not 0 <= c < num_classes:
            raise ValueError(
                f"class {c} is unknown: the model has {num_classes} (0..{num_classes - 1})"
            )
        if not bool((labels == c).any()):
            raise ValueError(f"no image of class {c} in the data")


def _shift(
    model: nn.Module, x: torch.Tensor, layer: str, maps: torch.Tensor, settings: ConceptSettings
) -> float:
    low = float(maps.min())
    if low >= 0:
        return 0.0
    if settings.shift:
        return -low
    after = _non_negative_after(model, x[:8], layer)
    fix = f"layer {after!r} (after a ReLU) has none" if after else "no later layer has none"
    raise NegativeActivationsError(
        f"layer {layer!r} has negative activations (down to {low:.3g}), which NMF cannot "
        f"factorise: {fix}; or shift them by their minimum (`shift`)"
    )


def _non_negative_after(model: nn.Module, x: torch.Tensor, layer: str) -> str | None:
    """The first layer run after ``layer`` whose maps are all non-negative on ``x``."""
    order: list[tuple[str, bool]] = []

    def keep(name: str, out: torch.Tensor) -> None:
        if out.ndim == 4 and out.shape[2] * out.shape[3] > 1:
            order.append((name, bool(out.min() >= 0)))

    with eval_mode(model), torch.no_grad(), recording(model, keep, None):
        model(x.to(model_device(model)))
    names = [name for name, _ in order]
    if layer not in names:
        return None
    return next((name for name, ok in order[names.index(layer) + 1 :] if ok), None)


def _group(
    model: nn.Module,
    x: torch.Tensor,
    maps: torch.Tensor,
    members: torch.Tensor,
    labels: torch.Tensor,
    group: int | None,
    scored: tuple[int, ...],
    scorer: _Scorer,
    settings: ConceptSettings,
) -> ConceptGroup:
    """Factorise the ``members``' activations and score the concepts for ``scored``."""
    if settings.patches is None:
        rows = maps[members].permute(0, 2, 3, 1).reshape(-1, maps.shape[1])
        nmf, _, error = factorise(rows, settings.k, settings)
        u = coefficients(nmf, maps[members])
        exemplars, boxes = _exemplars_at(u, members, x.shape[-2:], settings.top)
    else:
        patches, origin = patch_inputs(x[members], settings.patches)
        pooled = layer_maps(model, patches, scorer.layer, settings.batch_size).mean((2, 3))
        nmf, strength, error = factorise(pooled + scorer.shift, settings.k, settings)
        exemplars, boxes = _exemplars_of_patches(strength, origin, members, settings.top)
        u = coefficients(nmf, maps[members])
    bank = torch.from_numpy(nmf.components_).float()
    importance = _importance(model, x, maps, members, labels, u, bank, scored, scorer, settings)
    sobol_, gradient, deletion, insertion, random = importance
    return ConceptGroup(group, bank, error, scored, sobol_, gradient, deletion, insertion, random,
                        exemplars, boxes)  # fmt: skip


def _exemplars_at(
    u: torch.Tensor, members: torch.Tensor, size: torch.Size, top: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per concept, the ``top`` images where it is strongest, and the box around the
    part of each where its upsampled map is at least half its peak."""
    peak = u.flatten(2).amax(2)  # [n, k]
    order = torch.argsort(peak, dim=0, descending=True, stable=True)[:top].T  # [k, top]
    boxes = torch.zeros(*order.shape, 4, dtype=torch.long, device="cpu")
    for i, row in enumerate(order):
        up = F.interpolate(u[row, i : i + 1], size=tuple(size), mode="bilinear",
                           align_corners=False)[:, 0]  # fmt: skip
        for j, m in enumerate(up):
            ys, xs = torch.nonzero(m >= 0.5 * m.max(), as_tuple=True)
            boxes[i, j] = torch.stack([ys.min(), xs.min(), ys.max() + 1, xs.max() + 1])
    return members[order], boxes


def _exemplars_of_patches(
    strength: torch.Tensor, origin: torch.Tensor, members: torch.Tensor, top: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per concept, the ``top`` patches with its largest coefficients (CRAFT's
    exemplars), as their image and box."""
    order = torch.argsort(strength, dim=0, descending=True, stable=True)[:top].T  # [k, top]
    return members[origin[order, 0]], origin[order, 1:]


def _importance(
    model: nn.Module,
    x: torch.Tensor,
    maps: torch.Tensor,
    members: torch.Tensor,
    labels: torch.Tensor,
    u: torch.Tensor,
    bank: torch.Tensor,
    scored: tuple[int, ...],
    scorer: _Scorer,
    settings: ConceptSettings,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(sobol, gradient, deletion, insertion, random_insertion)``, each averaged over
    the first ``importance_images`` members of each scored class."""
    k = bank.shape[0]
    masks = sobol.design(k, settings.designs)
    random = _random_direction(bank, settings.seed)
    position = {int(m): i for i, m in enumerate(members)}
    out: list[list[torch.Tensor]] = [[], [], [], [], []]
    for c in scored:
        chosen = [int(m) for m in members if int(labels[m]) == c][: settings.importance_images]
        if not chosen:  # a class no image of the group has: nothing to average over
            for part, size in zip(out, ((k,), (k,), (k + 1,), (k + 1,), ()), strict=True):
                part.append(torch.full(size, float("nan"), device="cpu"))
            continue
        us = u[[position[m] for m in chosen]]
        stis = torch.stack([
            sobol.total_indices(scorer.logits(x[m : m + 1], ui, bank, masks)[:, c], k,
                                settings.designs)
            for m, ui in zip(chosen, us, strict=True)
        ]).mean(0)  # fmt: skip
        order = torch.argsort(stis, descending=True, stable=True)
        curves = _curves(x, chosen, us, bank, order, random, c, scorer)
        out[0].append(stis)
        out[1].append(_gradient_times_concept(x[chosen], maps[chosen], us, bank, c, scorer))
        for part, curve in zip(out[2:], curves, strict=True):
            part.append(curve)
    s, g, d, i, r = (torch.stack(part) for part in out)
    return s, g, d, i, r


def _random_direction(bank: torch.Tensor, seed: int) -> torch.Tensor:
    """``[C]``: a non-negative random direction (scaled to each concept's length when
    used)."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(bank.shape[1], generator=g, device="cpu")


def _curves(
    x: torch.Tensor,
    chosen: list[int],
    us: torch.Tensor,
    bank: torch.Tensor,
    order: torch.Tensor,
    random: torch.Tensor,
    c: int,
    scorer: _Scorer,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """C-Deletion and C-Insertion (class ``c``'s probability with the ``t`` most
    important concepts removed, or alone, ``t = 0..k``) and the random control."""
    k = bank.shape[0]
    steps = torch.zeros(k + 1, k, device="cpu")
    for t in range(1, k + 1):
        steps[t, order[:t]] = 1.0
    first = int(order[0])
    control = bank.clone()
    control[first] = random * bank[first].norm() / random.norm()
    deletion, insertion, rand = [], [], []
    for m, ui in zip(chosen, us, strict=True):
        probs = scorer.logits(x[m : m + 1], ui, bank, torch.cat([1 - steps, steps])).softmax(1)
        deletion.append(probs[: k + 1, c])
        insertion.append(probs[k + 1 :, c])
        only = torch.zeros(1, k, device="cpu")
        only[0, first] = 1.0
        rand.append(scorer.logits(x[m : m + 1], ui, control, only).softmax(1)[0, c])
    return torch.stack(deletion).mean(0), torch.stack(insertion).mean(0), torch.stack(rand).mean()


def _gradient_times_concept(
    x: torch.Tensor,
    maps: torch.Tensor,
    us: torch.Tensor,
    bank: torch.Tensor,
    c: int,
    scorer: _Scorer,
) -> torch.Tensor:
    """``[k]``: per concept, ``sum_positions u_i (grad . h_i)``, mean over the images."""
    grads = scorer.gradient(x, c, maps.shape)
    along = torch.einsum("nchw,kc->nkhw", grads, bank)
    return (along * us).sum((2, 3)).mean(0)


__all__ = [
    "ConceptGroup",
    "ConceptSettings",
    "Concepts",
    "NegativeActivationsError",
    "coefficients",
    "concept_maps",
    "concepts",
    "factorise",
    "layer_maps",
    "patch_inputs",
]
