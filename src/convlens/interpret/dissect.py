"""Network Dissection over a whole data set: what each unit of a layer responds to.

One pass over the data (:func:`dissect`) keeps, per unit of the layer, in memory that
does not grow with the data set:

- a quantile sketch of all its activations (every spatial position of every image),
  giving the unit's threshold at the top ``quantile`` (0.5% by default, Bau et al.'s
  rule), within a relative error of 1/257 (:class:`QuantileSketch`);
- its top-N images by peak (or mean) activation, with their maps;
- for labelled data, the sum of its mean activation per class, hence the top class
  and a class selectivity index ``(mu_top - mu_rest) / (mu_top + mu_rest)`` (Morcos
  et al., 2018; ``mu_rest`` is the mean over the other classes).

For a Broden data set a second pass thresholds each unit's maps, upsampled to the
segmentation's size, and tallies NetDissect-Lite's data-set-level IoU per concept:
``sum of intersections / sum of unions`` over all images, where a unit's activated
pixels count towards a concept's union on the images where they touch some label of
that concept's primary category (NetDissect-Lite's ``tally_units_cat``; a label listed
under several categories counts under the one where its coverage is largest, once).
Pixels whose label is not in ``label.csv`` are ignored. A unit's label is its best
concept when that IoU reaches ``iou_threshold`` (0.04, as in the paper).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from convlens.core.device import model_device
from convlens.core.hooks import eval_mode, get_layer, hooked
from convlens.core.precision import autocast, current, in_precision
from convlens.core.progress import JobProgress
from convlens.core.settings import settle
from convlens.core.shards import (
    Shard,
    ShardFolder,
    Sharding,
    plan,
    run_shards,
    weights_digest,
)
from convlens.core.tensors import counts
from convlens.data.broden import BrodenSource, Concept
from convlens.data.sources import Source, SourceBatch

BY = ("peak", "mean")


class QuantileSketch:
    """Per-unit histograms of float32 values in buckets of relative width 2^-7.

    A bucket is a float's sign, exponent and first 7 mantissa bits, so the bucket of a
    value is a shift of its bits (no logarithm) and a quantile's estimate (the bucket's
    harmonic midpoint) is within a relative error of 1/257 of the value of that rank
    (``torch.quantile(..., interpolation="lower")``). Magnitudes below 2^-24 (6e-8)
    count as zero; above 2^24 (1.7e7) they share the last bucket. Memory: ``units x
    12,289`` counters, whatever the number of values.
    """

    SHIFT = 16  # 23 mantissa bits, keep 7
    RELATIVE_ERROR = 1 / 257

    def __init__(self, units: int, device: torch.device | str = "cpu") -> None:
        self.units = units
        self.low = (127 - 24) << 7  # the bucket key of 2^-24
        self.n = (24 + 24) << 7  # buckets per sign
        self.width = 2 * self.n + 1  # negatives, zero, positives; ascending values
        self.counts = torch.zeros(units, self.width, dtype=torch.long, device=device)
        self._offsets = torch.arange(units, device=device)[:, None] * self.width

    def add(self, values: torch.Tensor) -> None:
        """Count ``values``, ``[units, M]`` (any float dtype)."""
        v = values.float().contiguous()
        key = (v.abs().view(torch.int32) >> self.SHIFT) - self.low
        key = key.clamp(-1, self.n - 1)
        bucket = torch.where(v < 0, self.n - 1 - key, self.n + 1 + key)
        bucket = torch.where(key < 0, self.n, bucket) + self._offsets
        self.counts += counts(bucket, self.units * self.width).view(self.units, self.width)

    def _value(self, key: torch.Tensor) -> torch.Tensor:
        """The harmonic midpoint of positive bucket ``key``."""
        lo = ((key + self.low) << self.SHIFT).int().view(torch.float32)
        hi = ((key + self.low + 1) << self.SHIFT).int().view(torch.float32)
        return 2 * lo * hi / (lo + hi)

    def quantile(self, q: float) -> torch.Tensor:
        """``[units]``: estimates of the value of rank ``floor(q * (M - 1))``."""
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"quantile must be in [0, 1], got {q}")
        total = self.counts.sum(1)
        if int(total.min()) == 0:
            raise ValueError("no values were added")
        rank = torch.floor(q * (total - 1).double()).long()
        bucket = (self.counts.cumsum(1) > rank[:, None]).int().argmax(1)
        pos = self._value((bucket - self.n - 1).clamp_min(0))
        neg = -self._value((self.n - 1 - bucket).clamp_min(0))
        zero = torch.zeros_like(pos)
        return torch.where(bucket > self.n, pos, torch.where(bucket < self.n, neg, zero))


class _TopImages:
    """The ``k`` best images of each unit so far, with their maps: ranked by score, ties
    by the smaller image index, so the best of a union does not depend on the order in
    which its parts came."""

    def __init__(self, units: int, k: int, device: torch.device | str) -> None:
        self.k = k
        self.score = torch.full((units, k), -math.inf, device=device)
        self.index = torch.full((units, k), -1, dtype=torch.long, device=device)
        self.maps: torch.Tensor | None = None

    def add(self, score: torch.Tensor, index: torch.Tensor, feats: torch.Tensor) -> None:
        """``score`` ``[B, C]``, ``index`` ``[B]``, ``feats`` ``[B, C, h, w]``."""
        c = feats.shape[1]
        self.merge(score.T, index[None].expand(c, -1), feats.transpose(0, 1))

    def merge(self, score: torch.Tensor, index: torch.Tensor, maps: torch.Tensor) -> None:
        """Per unit, ``score`` and ``index`` ``[C, m]`` and ``maps`` ``[C, m, h, w]``."""
        c, (h, w) = maps.shape[0], maps.shape[2:]
        if self.maps is None:
            self.maps = maps.new_zeros(c, self.k, h, w)
        scores = torch.cat([self.score, score], 1)
        indices = torch.cat([self.index, index], 1)
        order = indices.argsort(dim=1, stable=True)  # by index, then stably by score
        ranked = scores.gather(1, order).argsort(dim=1, descending=True, stable=True)
        order = order.gather(1, ranked)
        order = order[:, : self.k]
        self.score, self.index = scores.gather(1, order), indices.gather(1, order)
        both = torch.cat([self.maps, maps], 1)
        self.maps = both.gather(1, order[..., None, None].expand(-1, -1, h, w))


class _IoUTally:
    """NetDissect-Lite's tallies for the IoU of every unit with every concept."""

    def __init__(self, units: int, concepts: list[Concept], categories: list[str], device: Any):
        self.labels = max(c.number for c in concepts) + 1
        self.cat_index = {cat: g for g, cat in enumerate(categories)}
        # a label counts under its primary category only (NetDissect-Lite's rule)
        labelcat = torch.zeros(self.labels, max(1, len(categories)), device=device)
        self.known = torch.zeros(self.labels, dtype=torch.bool, device=device)
        for c in concepts:
            self.known[c.number] = True
            if c.primary in self.cat_index:
                labelcat[c.number, self.cat_index[c.primary]] = 1
        self.labelcat = labelcat
        self.both = torch.zeros(units * self.labels, dtype=torch.float64, device=device)
        self.units_cat = torch.zeros(units, labelcat.shape[1], dtype=torch.float64, device=device)
        self.label_pixels = torch.zeros(self.labels, dtype=torch.float64, device=device)
        self.units = units

    def add(self, feats: torch.Tensor, threshold: torch.Tensor, seg: torch.Tensor) -> None:
        """One image: features ``[C, h, w]``, thresholds ``[C]``, segmentation ``[D, sh, sw]``."""
        size = (seg.shape[1], seg.shape[2])
        seg = seg.to(feats.device).flatten(1)
        inside = (seg >= 0) & (seg < self.labels)  # a label not in label.csv is ignored
        seg = torch.where(inside, seg, 0)
        seg = torch.where(self.known[seg], seg, 0)
        counted = counts(seg, self.labels).double()
        counted[0] = 0
        self.label_pixels += counted
        # NetDissect upsamples each map to the segmentation's size, then thresholds it
        up = F.interpolate(feats[None], size=size, mode="bilinear", align_corners=False)
        mask = up[0].flatten(1) > threshold[:, None]  # [C, P]
        unit, pix = mask.nonzero(as_tuple=True)
        if unit.numel() == 0:
            return
        lab = seg[:, pix]  # [D, nnz]
        keys = (unit[None] * self.labels + lab)[lab > 0]
        uniq, count = keys.unique(return_counts=True)
        self.both.index_add_(0, uniq, count.double())
        hit = torch.zeros(self.units, self.labelcat.shape[1], device=feats.device)
        hit.index_add_(0, uniq // self.labels, self.labelcat[uniq % self.labels])
        active = counts(unit, self.units).double()
        self.units_cat += active[:, None] * (hit > 0)

    def state(self) -> dict[str, torch.Tensor]:
        return {
            "both": self.both.cpu(),
            "units_cat": self.units_cat.cpu(),
            "label_pixels": self.label_pixels.cpu(),
        }

    def absorb(self, state: dict[str, torch.Tensor]) -> None:
        """Add a shard's tallies (counts of pixels: sums of whole numbers, exact)."""
        self.both += state["both"].to(self.both.device)
        self.units_cat += state["units_cat"].to(self.units_cat.device)
        self.label_pixels += state["label_pixels"].to(self.label_pixels.device)

    def iou(self, numbers: list[int]) -> torch.Tensor:
        """``[C, len(numbers)]`` IoU of every unit with the concepts ``numbers``."""
        both = self.both.view(self.units, self.labels)
        union = self.units_cat @ self.labelcat.double().T + self.label_pixels[None] - both
        iou = both / (union + 1e-10)
        return iou[:, numbers].float()


@dataclass(frozen=True)
class Dissection:
    """What each unit of ``layer`` responds to over a data set (see the module doc)."""

    layer: str
    source: str  # what was dissected, in words
    images: int  # images seen
    skipped: tuple[str, ...]  # unreadable files left out
    quantile: float  # the top fraction of activations above each threshold
    by: str  # "peak" or "mean": how top images are ranked
    thresholds: torch.Tensor  # [C]
    top_index: torch.Tensor  # [C, N] source positions of each unit's top images, best first
    top_score: torch.Tensor  # [C, N] their peak (or mean) activation
    top_maps: torch.Tensor  # [C, N, h, w] their activation maps
    top_names: tuple[tuple[str, ...], ...]  # [C][N] how the source calls them
    classes: tuple[str, ...] = ()
    class_means: torch.Tensor | None = None  # [K, C] mean activation per class
    # [K, C] mean of max(0, activation) per class: what selectivity is computed on
    rectified_means: torch.Tensor | None = None
    signed: bool = False  # some activation was negative (a layer before its ReLU)
    class_counts: torch.Tensor | None = None  # [K] images per class
    concepts: tuple[Concept, ...] = ()
    iou: torch.Tensor | None = None  # [C, L] IoU with each concept
    iou_threshold: float = 0.04
    resumed: int = 0  # shards of the first pass read back from ``state_dir``, not computed

    @property
    def units(self) -> int:
        return self.thresholds.shape[0]

    @property
    def top_class(self) -> torch.Tensor | None:
        """``[C]`` the class with the largest mean activation, or None without labels."""
        if self.class_means is None:
            return None
        return self.class_means.nan_to_num(-math.inf).argmax(0)

    @property
    def selectivity(self) -> torch.Tensor | None:
        """``[C]`` ``(mu_top - mu_rest) / (mu_top + mu_rest)``; 0 where both are 0.

        The index is defined for non-negative activations (Morcos et al. 2018 read it
        after the unit's ReLU), where it lies in [0, 1]; so the class means here are of
        ``max(0, activation)``: the same on a layer after its ReLU, and what the unit
        passes on through a ReLU for a layer before one (a BatchNorm or conv output,
        ``signed``). On a signed layer a raw mean could be negative and the index
        meaningless (below -1 on densenet121's ``features``)."""
        means = self.rectified_means if self.rectified_means is not None else self.class_means
        if means is None or means.shape[0] < 2:
            return None
        means = means.nan_to_num(0.0)
        top = means.max(0).values
        rest = (means.sum(0) - top) / (means.shape[0] - 1)
        denom = top + rest
        return torch.where(denom != 0, (top - rest) / denom.where(denom != 0, 1.0), 0.0)

    @property
    def best_concept(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``([C] concept positions, [C] IoU)`` of each unit's best concept."""
        if self.iou is None or self.iou.shape[1] == 0:
            return None
        best = self.iou.max(1)
        return best.indices, best.values

    def unit_rows(self) -> list[dict[str, Any]]:
        """One plain dict per unit (for CSV, JSON and the atlas), ordered by unit."""
        top_class, sel, best = self.top_class, self.selectivity, self.best_concept
        rows = []
        for u in range(self.units):
            row: dict[str, Any] = {"unit": u, "threshold": float(self.thresholds[u])}
            if best is not None:
                c, score = self.concepts[int(best[0][u])], float(best[1][u])
                row.update(
                    concept=c.name,
                    category=";".join(c.categories),
                    iou=score,
                    label=c.name if score >= self.iou_threshold else "",
                )
            if top_class is not None and sel is not None and self.class_means is not None:
                row.update(
                    top_class=self.classes[int(top_class[u])],
                    selectivity=float(sel[u]),
                    class_means=[float(m) for m in self.class_means[:, u]],
                )
            row["top_images"] = list(self.top_names[u])
            row["top_scores"] = [float(s) for s in self.top_score[u]]
            rows.append(row)
        return rows


class _Stop(Exception):
    """Raised by the capture hook: nothing after the layer needs computing."""


def _layer_features(model: nn.Module, layer: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """A function running ``model`` up to ``layer`` and returning its output."""
    module = get_layer(model, layer)
    store: dict[str, torch.Tensor] = {}

    def hook(_m: nn.Module, _i: Any, out: Any) -> None:
        store["out"] = out
        raise _Stop

    def run(x: torch.Tensor) -> torch.Tensor:
        with hooked([(module, hook)]), contextlib.suppress(_Stop):
            model(x)
        if "out" not in store:
            raise ValueError(f"layer {layer!r} did not run in the model's forward pass")
        out = store.pop("out")
        if not isinstance(out, torch.Tensor) or out.ndim != 4:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(
                f"layer {layer!r} outputs {shape}, not [N, C, h, w]: dissection needs a "
                "convolutional layer (one with spatial maps)"
            )
        return out

    return run


@dataclass(frozen=True)
class DissectSettings:
    """How :func:`dissect` passes over the data.

    Attributes:
        top: images kept per unit, best first.
        quantile: a unit's threshold is at the top ``quantile`` of all its activations.
        by: rank a unit's images by their ``peak`` or ``mean`` activation.
        iou_threshold: a unit is labelled with its best concept from this IoU on.
        batch_size: images per forward pass.
        workers: processes reading and decoding images (0: in this one).
    """

    top: int = 8
    quantile: float = 0.005
    by: str = "peak"
    iou_threshold: float = 0.04
    batch_size: int = 128
    workers: int = 0

    def check(self) -> None:
        """Raise ``ValueError`` naming the first setting out of range."""
        if self.top < 1:
            raise ValueError(f"top must be >= 1, got {self.top}")
        if not 0.0 < self.quantile < 1.0:
            raise ValueError(f"quantile must be in (0, 1), got {self.quantile}")
        if self.by not in BY:
            raise ValueError(f"by must be one of {', '.join(BY)}, got {self.by!r}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")


# Class sums are kept in fixed point (int64, units of 2^-32): whole numbers add exactly
# in any order, so the sums of shards merged equal the sums of one pass, to the bit.
FIXED = 2.0**32


def _fixed(values: torch.Tensor) -> torch.Tensor:
    return torch.round(values.double() * FIXED).long()


class _Tally:
    """What one pass over the data keeps of each unit: the quantile sketch, the top
    images and, for labelled data, the per-class sums. Tallies of parts of the data
    merge exactly (:meth:`merge`)."""

    def __init__(self, classes: int, s: DissectSettings, device: torch.device | str) -> None:
        self.k, self.s, self.device = classes, s, torch.device(device)
        self.sketch: QuantileSketch | None = None
        self.best: _TopImages | None = None
        self.sums: torch.Tensor | None = None
        self.rectified: torch.Tensor | None = None
        self.counts: torch.Tensor | None = None
        self.negative = torch.zeros((), dtype=torch.bool, device=device)
        self.seen = 0
        self.skipped: list[str] = []

    def _start(self, c: int) -> None:
        self.sketch = QuantileSketch(c, self.device)
        self.best = _TopImages(c, self.s.top, self.device)
        if self.k:
            self.sums = torch.zeros(self.k, c, dtype=torch.long, device=self.device)
            self.rectified = torch.zeros_like(self.sums)
            self.counts = torch.zeros(self.k, dtype=torch.long, device=self.device)

    def add(self, feats: torch.Tensor, batch: SourceBatch) -> None:
        """One batch of the layer's maps ``[B, C, h, w]``."""
        n, c = feats.shape[:2]
        if self.sketch is None:
            self._start(c)
        assert self.sketch is not None and self.best is not None
        self.sketch.add(feats.transpose(0, 1).reshape(c, -1))
        means = feats.mean((2, 3))
        ranked = feats.amax((2, 3)) if self.s.by == "peak" else means
        self.best.add(ranked, batch.index.to(self.device), feats)
        if self.sums is not None and batch.labels is not None:
            assert self.rectified is not None and self.counts is not None
            labels = batch.labels.to(self.device)
            self.sums.index_add_(0, labels, _fixed(means))
            self.rectified.index_add_(0, labels, _fixed(feats.clamp_min(0).mean((2, 3))))
            self.counts += counts(labels, self.k)
            self.negative |= (feats < 0).any()  # a tensor: no wait for the GPU per batch
        self.seen += n

    def state(self) -> dict[str, Any]:
        """Everything the tally holds, on the CPU (what a shard sends back)."""
        out: dict[str, Any] = {"seen": self.seen, "skipped": list(self.skipped)}
        if self.sketch is None or self.best is None or self.best.maps is None:
            return out
        out.update(
            sketch=self.sketch.counts.cpu(),
            score=self.best.score.cpu(),
            index=self.best.index.cpu(),
            maps=self.best.maps.cpu(),
            negative=bool(self.negative),
        )
        if self.sums is not None and self.rectified is not None and self.counts is not None:
            out.update(sums=self.sums.cpu(), rectified=self.rectified.cpu())
            out.update(counts=self.counts.cpu())
        return out

    def merge(self, state: dict[str, Any]) -> None:
        """Add another part's :meth:`state`: counts and sums add, top images are the
        best of the union; exact, so the order and number of parts do not matter."""
        self.seen += int(state["seen"])
        self.skipped += list(state["skipped"])
        if "sketch" not in state:  # that part read no image
            return
        if self.sketch is None:
            self._start(state["sketch"].shape[0])
        assert self.sketch is not None and self.best is not None
        dev = self.device
        self.sketch.counts += state["sketch"].to(dev)
        self.best.merge(state["score"].to(dev), state["index"].to(dev), state["maps"].to(dev))
        self.negative |= bool(state["negative"])
        if "sums" in state and self.sums is not None:
            assert self.rectified is not None and self.counts is not None
            self.sums += state["sums"].to(dev)
            self.rectified += state["rectified"].to(dev)
            self.counts += state["counts"].to(dev)

    def per_class(self, sums: torch.Tensor | None) -> torch.Tensor | None:
        """Per-class means ``[K, C]`` of ``sums``, on the CPU."""
        if sums is None or self.counts is None:
            return None
        return (sums.double() / FIXED / self.counts[:, None].double()).float().cpu()


@dataclass
class _Pass:
    """One shard of a pass over the data, as a task (picklable, so that it can run in a
    Ray worker): the first pass's tally, or, given ``thresholds``, the IoU tally of the
    Broden pass."""

    model: nn.Module
    data: Source
    layer: str
    s: DissectSettings
    precision: str = "fp32"
    thresholds: torch.Tensor | None = None
    on_batch: Callable[[int], None] | None = None

    def __call__(self, shard: Shard) -> dict[str, Any]:
        device = model_device(self.model)
        features = _layer_features(self.model, self.layer)
        with torch.inference_mode(), eval_mode(self.model), autocast(self.precision, device):
            if self.thresholds is None:
                return self._first(features, device, shard)
            return self._iou(features, device, shard)

    def _batches(self, shard: Shard) -> Iterator[SourceBatch]:
        s = self.s
        for batch in self.data.batches(s.batch_size, s.workers, shard.start, shard.stop):
            yield batch
            if self.on_batch is not None:
                self.on_batch(len(batch.index))

    def _first(
        self, features: Callable[[torch.Tensor], torch.Tensor], device: torch.device, shard: Shard
    ) -> dict[str, Any]:
        tally = _Tally(len(self.data.classes), self.s, device)
        skipped = len(self.data.skipped)
        for batch in self._batches(shard):
            tally.add(features(batch.x.to(device)).float(), batch)
        tally.skipped = list(self.data.skipped[skipped:])
        return tally.state()

    def _iou(
        self, features: Callable[[torch.Tensor], torch.Tensor], device: torch.device, shard: Shard
    ) -> dict[str, Any]:
        assert isinstance(self.data, BrodenSource) and self.thresholds is not None
        thresholds = self.thresholds.to(device)
        tally: _IoUTally | None = None
        for batch in self._batches(shard):
            feats = features(batch.x.to(device)).float()
            if tally is None:
                tally = _IoUTally(feats.shape[1], self.data.concepts, self.data.categories, device)
            for f, seg in zip(feats, batch.segmentations, strict=True):
                tally.add(f, thresholds, seg)
        return {} if tally is None else tally.state()


@in_precision("dissect")
def dissect(
    model: nn.Module,
    data: Source,
    layer: str,
    settings: DissectSettings | None = None,
    *,
    progress: bool = True,
    on_step: Callable[[int, int], None] | None = None,
    sharding: Sharding | None = None,
    **overrides: Any,
) -> Dissection:
    """Dissect ``layer`` of ``model`` over ``data`` (see the module doc).

    The model runs where its parameters are, in evaluation mode (restored after);
    each batch stops at ``layer``. ``settings`` (or its fields as keywords,
    ``top=4``): ``top`` images per unit, ranked ``by`` peak or mean activation;
    thresholds at the top ``quantile`` of all activations.

    Args:
        on_step: called as ``on_step(images done, images)`` as the passes go.
        sharding: shards (at multiples of ``batch_size``) whose tallies merge exactly,
            here or on Ray, kept for a rerun (:class:`~convlens.core.shards.Sharding`).

    Raises:
        ValueError: unknown layer, a layer without spatial maps, bad arguments.
        ShardError: a shard failed for good (the others are kept in ``state_dir``), a
            ``state_dir`` of another job, or a cluster that does not answer.
    """
    s = settle(DissectSettings, settings, overrides)
    how = sharding or Sharding()
    get_layer(model, layer)
    parts = plan(len(data), how.shards, s.batch_size)
    total = (2 if isinstance(data, BrodenSource) else 1) * len(data)
    task = _Pass(model, data, layer, s, current("dissect"))
    folder = None if how.state_dir is None else ShardFolder(how.state_dir, _manifest(task, parts))
    counter = JobProgress(total, progress, on_step, how.ray is None, desc="dissecting", unit="img")
    task.on_batch = counter.advance if how.ray is None else None  # a Ray task cannot call back
    gpus = 1.0 if model_device(model).type == "cuda" else 0.0

    def run(job: _Pass, part: str) -> list[dict[str, Any]]:
        return run_shards(
            job, parts, ray=how.ray, folder=folder, part=part, gpus=gpus, on_done=counter.shard
        )

    with counter.bar, torch.inference_mode(), eval_mode(model):
        tally = _Tally(len(data.classes), s, model_device(model))
        for state in run(task, "pass1"):
            tally.merge(state)
        resumed = counter.resumed
        best, sketch = tally.best, tally.sketch
        if sketch is None or best is None or best.maps is None:
            raise ValueError(f"{data.description}: no image could be read")
        thresholds = sketch.quantile(1.0 - s.quantile)
        iou = None
        if isinstance(data, BrodenSource):
            second = replace(task, thresholds=thresholds.cpu())
            states = run(second, "iou")
            iou = _merged_iou(states, data, best.score.shape[0], thresholds.device)
    data.skipped[:] = tally.skipped
    return _answer(data, layer, s, tally, thresholds, iou, resumed)


def _answer(
    data: Source,
    layer: str,
    s: DissectSettings,
    tally: _Tally,
    thresholds: torch.Tensor,
    iou: torch.Tensor | None,
    resumed: int,
) -> Dissection:
    best = tally.best
    assert best is not None and best.maps is not None
    n_top = min(s.top, tally.seen)
    index = best.index[:, :n_top].cpu()
    return Dissection(
        layer=layer,
        source=data.description,
        images=tally.seen,
        skipped=tuple(tally.skipped),
        quantile=s.quantile,
        by=s.by,
        thresholds=thresholds.cpu(),
        top_index=index,
        top_score=best.score[:, :n_top].cpu(),
        top_maps=best.maps[:, :n_top].cpu(),
        top_names=tuple(tuple(data.name(int(i)) for i in row) for row in index),
        classes=data.classes,
        class_means=tally.per_class(tally.sums),
        rectified_means=tally.per_class(tally.rectified),
        signed=bool(tally.negative),
        class_counts=None if tally.counts is None else tally.counts.long().cpu(),
        concepts=tuple(data.concepts) if isinstance(data, BrodenSource) else (),
        iou=None if iou is None else iou.cpu(),
        iou_threshold=s.iou_threshold,
        resumed=resumed,
    )


def _manifest(task: _Pass, parts: list[Shard]) -> dict[str, Any]:
    """What a dissection's shards depend on: a folder of shards serves only this job."""
    s = task.s
    return {
        "job": "dissect",
        "weights": weights_digest(task.model),
        "layer": task.layer,
        "source": task.data.description,
        "images": len(task.data),
        "classes": list(task.data.classes),
        "settings": {"top": s.top, "quantile": s.quantile, "by": s.by, "batch_size": s.batch_size},
        "precision": task.precision,
        "shards": [[p.start, p.stop] for p in parts],
    }


def _merged_iou(
    states: list[dict[str, Any]], data: BrodenSource, units: int, device: torch.device
) -> torch.Tensor:
    tally = _IoUTally(units, data.concepts, data.categories, device)
    for state in states:
        if state:  # a shard that read no image has no tally
            tally.absorb(state)
    return tally.iou([c.number for c in data.concepts])


__all__ = [
    "BY",
    "DissectSettings",
    "Dissection",
    "QuantileSketch",
    "dissect",
]
