"""What feature visualisation optimises: objectives as small objects that compose.

As in Lucid and lucent, an objective is built from parts and arithmetic::

    channel("layer4", [3, 7]) - 0.05 * diversity("layer4")
    -neuron("features", [12])                 # what turns the unit off
    class_logit([281]) + 0.5 * channel("layer3", [9])

A batch of ``G * D`` images is optimised at once: ``G`` groups (one per unit or class of
the objective's ``targets``) of ``D`` images each. A part with targets scores image ``i``
for the target of its group; a part without targets (a direction, a whole layer)
scores every image the same way. Two parts with targets combine only when they have the
same number of them. The optimiser maximises the sum over the batch of every image's
score. Regularisers (``diversity``, to subtract) take part in that sum but are left out of the score
that :class:`~convlens.interpret.visualize.Visualization` reports as the activation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

KINDS = ("channel", "neuron", "class", "direction", "layer")


@dataclass(frozen=True)
class Batch:
    """How a batch of images is laid out: ``group[i]`` is the target group of image ``i``
    (``groups`` groups of ``per_group`` consecutive images). A batch may hold a slice of
    the objective's targets: group ``g`` is target ``first + g`` of ``of`` in all."""

    group: torch.Tensor
    groups: int
    per_group: int
    first: int = 0
    of: int | None = None  # the job's groups (None: this batch's)


class Objective:
    """A score of each image of a batch, to maximise (see the module doc).

    Subclasses set ``layer`` (the layer read; ``None``: the logits), ``targets`` (units or
    classes, one group of images each; ``None``: every image alike) and ``kind``, and
    implement :meth:`score`.
    """

    layer: str | None = None
    targets: tuple[int, ...] | None = None
    kind: str = "objective"
    regularizer = False

    def score(self, acts: Mapping[str | None, torch.Tensor], batch: Batch) -> torch.Tensor:
        """``[B]``: each image's score from the layers' outputs ``acts``."""
        raise NotImplementedError

    def terms(self) -> list[tuple[float, Objective]]:
        """The objective as a weighted sum of parts: ``[(weight, part), ...]``."""
        return [(1.0, self)]

    def layers(self) -> list[str | None]:
        """The layers its parts read, each once, in order."""
        return list(dict.fromkeys(part.layer for _, part in self.terms()))

    def check(self, widths: Mapping[str | None, int]) -> None:
        """Raise ``ValueError`` when a part does not fit its layer (``widths``: channels
        or classes of each layer read)."""
        for _, part in self.terms():
            part._check(widths[part.layer])

    def _check(self, width: int) -> None:
        if self.targets is None:
            return
        if not self.targets:
            raise ValueError("no units given")
        what = "classes" if self.kind == "class" else f"units of layer {self.layer!r}"
        bad = [k for k in self.targets if not 0 <= k < width]
        if bad:
            raise ValueError(f"{bad[:10]} out of range: there are {width} {what} (0..{width - 1})")

    def __add__(self, other: Objective) -> Objective:
        return Sum([*self.terms(), *_as_objective(other).terms()])

    def __sub__(self, other: Objective) -> Objective:
        return self + (-1.0) * _as_objective(other)

    def __mul__(self, weight: float) -> Objective:
        if isinstance(weight, bool) or not isinstance(weight, (int, float)):
            return NotImplemented
        return Sum([(weight * w, part) for w, part in self.terms()])

    __rmul__ = __mul__

    def __neg__(self) -> Objective:
        return (-1.0) * self

    def __repr__(self) -> str:
        parts: list[str] = []
        for w, part in self.terms():
            text = ("" if abs(w) == 1 else f"{abs(w):g} * ") + part.describe()
            sign = "-" if w < 0 else ("+" if parts else "")
            parts.append(f"{sign} {text}" if parts else f"{sign}{text}")
        return " ".join(parts)

    def describe(self) -> str:
        """One part as its constructor call, e.g. ``channel('layer4', [3, 7])``."""
        return self.kind


class Sum(Objective):
    """A weighted sum of parts (what ``+``, ``-`` and ``*`` build)."""

    kind = "sum"

    def __init__(self, terms: Sequence[tuple[float, Objective]]) -> None:
        self._terms = list(terms)
        sized = {len(p.targets) for _, p in self._terms if p.targets is not None}
        if len(sized) > 1:
            raise ValueError(
                f"parts with {' and '.join(map(str, sorted(sized)))} targets cannot be added: "
                "give each part the same units (or none)"
            )
        self.targets = next((p.targets for _, p in self._terms if p.targets is not None), None)
        self.layer = self._terms[0][1].layer

    def terms(self) -> list[tuple[float, Objective]]:
        return list(self._terms)

    def score(self, acts: Mapping[str | None, torch.Tensor], batch: Batch) -> torch.Tensor:
        return sum(w * part.score(acts, batch) for w, part in self._terms)  # type: ignore[return-value]


def _as_objective(value: object) -> Objective:
    if not isinstance(value, Objective):
        raise TypeError(f"an objective combines with objectives, not {type(value).__name__}")
    return value


def _maps(acts: torch.Tensor, kind: str) -> torch.Tensor:
    if acts.ndim != 4:
        raise ValueError(f"objective {kind!r} needs [N, C, h, w] maps, got {tuple(acts.shape)}")
    return acts


class _Units(Objective):
    def __init__(self, layer: str | None, units: Sequence[int]) -> None:
        self.layer, self.targets = layer, tuple(int(u) for u in units)

    def _picked(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        assert self.targets is not None
        rows = torch.arange(batch.group.shape[0], device=batch.group.device)
        index = torch.tensor(self.targets, device=batch.group.device)[batch.first + batch.group]
        return rows, index

    def describe(self) -> str:
        units = list(self.targets or ())
        return f"{self.kind}({self.layer!r}, {units})" if self.layer else f"{self.kind}({units})"


class Channel(_Units):
    """A unit's mean activation over all positions."""

    kind = "channel"

    def score(self, acts: Mapping[str | None, torch.Tensor], batch: Batch) -> torch.Tensor:
        rows, index = self._picked(batch)
        return _maps(acts[self.layer], self.kind)[rows, index].mean((1, 2))


class Neuron(_Units):
    """A unit's activation at the centre position."""

    kind = "neuron"

    def score(self, acts: Mapping[str | None, torch.Tensor], batch: Batch) -> torch.Tensor:
        rows, index = self._picked(batch)
        maps = _maps(acts[self.layer], self.kind)
        return maps[rows, index, maps.shape[2] // 2, maps.shape[3] // 2]


class ClassLogit(_Units):
    """A class logit (the layer's spatial mean when the layer is a map)."""

    kind = "class"

    def score(self, acts: Mapping[str | None, torch.Tensor], batch: Batch) -> torch.Tensor:
        rows, index = self._picked(batch)
        out = acts[self.layer]
        return (out if out.ndim == 2 else out.mean((2, 3)))[rows, index]


class Direction(Objective):
    """The mean over positions of the layer's activation along a vector of its channels;
    given several vectors (``[T, C]``), one target each (the concepts of a layer)."""

    kind = "direction"

    def __init__(self, layer: str, vector: torch.Tensor) -> None:
        self.layer, self.vector = layer, vector
        if vector.ndim == 2:
            self.targets = tuple(range(vector.shape[0]))

    def _check(self, width: int) -> None:
        if self.vector.ndim not in (1, 2) or self.vector.shape[-1] != width:
            raise ValueError(
                f"the direction has shape {tuple(self.vector.shape)}, but layer {self.layer!r} "
                f"has {width} channels: give a vector of {width} (or [T, {width}] for T)"
            )

    def score(self, acts: Mapping[str | None, torch.Tensor], batch: Batch) -> torch.Tensor:
        maps = _maps(acts[self.layer], self.kind)
        vector = self.vector.to(maps)
        if vector.ndim == 1:
            return (maps * vector[None, :, None, None]).sum(1).mean((1, 2))
        per_image = vector[(batch.first + batch.group).to(maps.device)]
        return (maps * per_image[:, :, None, None]).sum(1).mean((1, 2))

    def describe(self) -> str:
        shape = "x".join(map(str, self.vector.shape))
        return f"direction({self.layer!r}, <{shape}>)"


class Layer(Objective):
    """The whole layer's mean squared activation (DeepDream)."""

    kind = "layer"

    def __init__(self, layer: str) -> None:
        self.layer = layer

    def score(self, acts: Mapping[str | None, torch.Tensor], batch: Batch) -> torch.Tensor:
        return _maps(acts[self.layer], self.kind).pow(2).mean((1, 2, 3))

    def describe(self) -> str:
        return f"layer({self.layer!r})"


class Diversity(Objective):
    """The similarity of the images of each group, to subtract (Lucid's diversity term,
    spelt as in lucent: ``channel(...) - w * diversity(...)``).

    The similarity of a group is the mean cosine similarity of the Gram matrices of the
    layer's activations over each pair of its images. Each image scores its group's
    similarity times the number of groups ``G`` of the whole job (the batch's sum is
    ``G * D`` times the sum of its groups' similarities); this scale is convlens's from
    the start: a weight pulls harder the more units are visualised together, however
    many of them share a pass.
    """

    kind = "diversity"
    regularizer = True

    def __init__(self, layer: str | None) -> None:
        self.layer = layer

    def score(self, acts: Mapping[str | None, torch.Tensor], batch: Batch) -> torch.Tensor:
        if batch.per_group < 2:
            return torch.zeros(batch.group.shape[0], device=batch.group.device)
        similarity = gram_similarity(acts[self.layer], batch.groups, batch.per_group)
        return (batch.of or batch.groups) * similarity[batch.group]

    def describe(self) -> str:
        return f"diversity({self.layer!r})"


def gram_similarity(acts: torch.Tensor, groups: int, per_group: int) -> torch.Tensor:
    """``[G]``: the mean cosine similarity of the Gram matrices of each pair among the
    ``per_group`` images of each group."""
    if acts.ndim != 4:
        acts = acts[:, :, None, None]
    flat = acts.flatten(2)  # [B, C, hw]
    gram = torch.bmm(flat, flat.transpose(1, 2)).flatten(1)  # [B, C * C]
    gram = F.normalize(gram, dim=1).reshape(groups, per_group, -1)
    sim = torch.bmm(gram, gram.transpose(1, 2))  # [G, D, D]
    off = sim.sum((1, 2)) - sim.diagonal(dim1=1, dim2=2).sum(1)
    return off / (per_group * (per_group - 1))


def channel(layer: str, units: Sequence[int]) -> Objective:
    """Each unit's mean activation over all positions of ``layer``."""
    return Channel(layer, units)


def neuron(layer: str, units: Sequence[int]) -> Objective:
    """Each unit's activation at the centre position of ``layer``."""
    return Neuron(layer, units)


def class_logit(classes: Sequence[int], layer: str | None = None) -> Objective:
    """Each class's logit (``layer`` None: the model's output)."""
    return ClassLogit(layer, classes)


def direction(layer: str, vector: torch.Tensor) -> Objective:
    """The activation of ``layer`` along ``vector`` (``[C]``, one weight per channel), or
    along each row of ``[T, C]`` (one target each, such as a layer's concepts)."""
    return Direction(layer, vector)


def layer(name: str) -> Objective:
    """The whole layer's mean squared activation (DeepDream)."""
    return Layer(name)


def diversity(layer: str | None) -> Objective:
    """The similarity of each group's images at ``layer``: subtract it, weighted, to make
    them differ."""
    return Diversity(layer)


def from_kind(
    kind: str,
    layer: str | None,
    units: Sequence[int] | None = None,
    vector: torch.Tensor | None = None,
) -> Objective:
    """The objective the command line and the explorer name by ``kind`` (one of
    :data:`KINDS`)."""
    if kind not in KINDS:
        raise ValueError(f"unknown objective {kind!r}; choose one of {', '.join(KINDS)}")
    if kind == "class":
        return class_logit(units or (), layer)
    if layer is None:
        raise ValueError(f"objective {kind!r} needs a layer")
    if kind == "direction":
        if vector is None:
            raise ValueError("objective direction needs a direction vector")
        return direction(layer, vector)
    if kind == "layer":
        return Layer(layer)
    return (channel if kind == "channel" else neuron)(layer, units or ())


__all__ = [
    "KINDS",
    "Batch",
    "Channel",
    "ClassLogit",
    "Direction",
    "Diversity",
    "Layer",
    "Neuron",
    "Objective",
    "Sum",
    "channel",
    "class_logit",
    "direction",
    "diversity",
    "from_kind",
    "gram_similarity",
    "layer",
    "neuron",
]
