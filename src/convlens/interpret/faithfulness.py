"""How faithful a saliency map is to the model: perturb the pixels it ranks highest and
watch the class probability.

- **Deletion and insertion** (Petsiuk et al., RISE, 2018): positions are ranked by
  saliency (ties by position); deletion replaces the top ``k`` with a baseline image,
  insertion starts from the baseline and restores them, for ``k`` in steps of
  ``ceil(HW / steps)``. The class probability against the fraction perturbed gives two
  curves and their areas (trapezoids). A faithful map makes deletion fall fast (low
  AUC) and insertion rise fast (high AUC).
- **Average Drop and Increase in Confidence** (Chattopadhyay et al., Grad-CAM++, 2018):
  the image multiplied by its map, ``drop = relu(p - p_masked) / (p + 1e-7)`` and
  ``increase = p < p_masked``.

Both follow torchcam 0.5's ``DeletionInsertionMetric`` and ``ClassificationMetric``
exactly (tested equal). Every perturbed image of a batch runs in one forward pass of
``batch_size`` images.

- **Infidelity and max-sensitivity** (Yeh et al., 2019), as captum computes them
  (tested equal): :func:`infidelity`, :func:`sensitivity_max`.

:func:`score_methods` adds the last two on request, and scores the CAM family and the
pixel attributions alike (every method of :mod:`convlens.interpret.maps.registry`). On
request it adds the columns of two more kinds of test:

- **ROAD** (:mod:`convlens.interpret.road`): the class probability, averaged over
  removal fractions 0.1 to 0.9, with the pixels removed most relevant first (MoRF, lower
  is better) and least relevant first (LeRF, higher is better), filled by noisy linear
  imputation;
- **sanity** (:mod:`convlens.interpret.sanity`): the Spearman similarity of each map to
  the map of the network with every layer randomised (MPRT, lower passes), the rise of
  the map's entropy there (eMPRT, higher passes), and the SSIM of the map with the map
  of a random other class (random logit, lower passes).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from convlens.core.compat import renamed
from convlens.core.device import model_device, on_model_device, pass_batch
from convlens.core.hooks import channels_last_twin, eval_mode
from convlens.core.precision import current, in_precision
from convlens.core.progress import progress_bar
from convlens.core.shards import (
    Shard,
    ShardFolder,
    Sharding,
    plan,
    run_shards,
    tensors_digest,
    weights_digest,
)
from convlens.core.tensors import baseline_image, minmax_scale
from convlens.interpret.maps import registry
from convlens.interpret.road import RoadSettings, road_curves
from convlens.interpret.sanity import (
    entropy_rise,
    fully_randomized,
    logit_similarity,
    other_classes,
    raw_map,
)
from convlens.interpret.similarity import similarity


@dataclass(frozen=True)
class Faithfulness:
    """Faithfulness of one saliency map per image."""

    fractions: torch.Tensor  # [S] fraction of positions perturbed, 0 to 1
    deletion: torch.Tensor  # [N, S] class probability as the top positions are removed
    insertion: torch.Tensor  # [N, S] class probability as they are restored
    deletion_auc: torch.Tensor  # [N] lower is more faithful
    insertion_auc: torch.Tensor  # [N] higher is more faithful
    drop: torch.Tensor  # [N] relative drop of the probability on the map-masked image
    increase: torch.Tensor  # [N] bool: the probability rose on the map-masked image


@on_model_device
@in_precision("faithfulness")
@torch.no_grad()
def faithfulness(
    model: nn.Module,
    x: torch.Tensor,
    saliency: torch.Tensor,
    classes: torch.Tensor | None = None,
    *,
    steps: int = 20,
    baseline: str = "zeros",
    batch_size: int | None = None,
) -> Faithfulness:
    """Deletion/insertion curves and Average Drop/Increase of ``saliency`` for ``x``.

    Args:
        x: model inputs ``[N, C, H, W]``.
        saliency: ``[N, H, W]`` maps at the input's size, scaled to [0, 1] (the
            ``upsampled`` maps of :class:`~convlens.interpret.maps.base.ClassMaps`).
        classes: ``[N]`` the class each map explains (default: the top-1 class).
        steps: number of perturbation steps (positions move ``ceil(HW / steps)`` at a time).
        baseline: see :func:`baseline_image`.
        batch_size: perturbed images per forward pass (default: 256, on the CPU fewer for
            large images, about half a million input values a pass, twice that in bf16
            or fp16: a 224 px batch of 256 runs slower than 32 batches of 8 there).

    Raises:
        ValueError: shapes that do not fit, a NaN map, bad ``steps`` or class index.
    """
    n, _, h, w = x.shape
    if saliency.shape != (n, h, w):
        raise ValueError(f"saliency must be [N, H, W] = {(n, h, w)}, got {tuple(saliency.shape)}")
    if torch.isnan(saliency).any():
        raise ValueError("saliency holds NaN values")
    batch_size = perturbed_batch(x, batch_size)
    if steps < 1 or batch_size < 1:
        raise ValueError(f"`steps` and `batch_size` must be >= 1, got {steps} and {batch_size}")
    with eval_mode(model):
        probs = model(x).float().softmax(1)
        classes = probs.argmax(1) if classes is None else classes
        if (
            classes.shape != (n,)
            or not 0 <= int(classes.min()) <= int(classes.max()) < probs.shape[1]
        ):
            raise ValueError(f"classes must be [N] indices in 0..{probs.shape[1] - 1}")
        p = probs.gather(1, classes[:, None])[:, 0]
        fractions, deletion, insertion = _curves(
            model, x, saliency, classes, p, steps, baseline_image(x, baseline), batch_size
        )
        masked = _scores(model, saliency[:, None] * x, classes, batch_size)
    return Faithfulness(
        fractions=fractions,
        deletion=deletion,
        insertion=insertion,
        deletion_auc=torch.trapezoid(deletion, fractions, dim=1),
        insertion_auc=torch.trapezoid(insertion, fractions, dim=1),
        drop=torch.relu(p - masked) / (p + 1e-7),
        increase=p < masked,
    )


def perturbed_batch(x: torch.Tensor, batch_size: int | None) -> int:
    """``batch_size``, or by default :func:`convlens.core.device.pass_batch`'s: 256
    perturbed images a pass, on the CPU at most about half a million input values (a
    million in bf16 or fp16)."""
    return pass_batch(x[0].numel(), x.device, batch_size)


def _scores(model: nn.Module, x: torch.Tensor, classes: torch.Tensor, batch: int) -> torch.Tensor:
    """Probability of ``classes[i]`` for each image ``x[i]``, ``batch`` at a time."""
    out = [
        model(x[i : i + batch]).float().softmax(1).gather(1, classes[i : i + batch, None])[:, 0]
        for i in range(0, x.shape[0], batch)
    ]
    return torch.cat(out)


def _curves(
    model: nn.Module,
    x: torch.Tensor,
    saliency: torch.Tensor,
    classes: torch.Tensor,
    p: torch.Tensor,
    steps: int,
    base: torch.Tensor,
    batch: int,
    with_insertion: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    n, positions = x.shape[0], x.shape[2] * x.shape[3]
    order = torch.argsort(saliency.flatten(1), dim=1, descending=True, stable=True)
    ranks = torch.argsort(order, dim=1)  # [N, HW] rank of each position
    step = (positions + steps - 1) // steps
    dev = x.device
    counts = torch.tensor([*range(0, positions, step), positions], device=dev)
    s = counts.numel()
    # Perturbed images in the order (image, curve, point): deletion keeps the positions
    # ranked below count, insertion keeps those ranked above it. The ends are known: the
    # first deletion and last insertion image is x itself (probability p), and the last
    # deletion and first insertion image is the baseline, run once for both.
    image = torch.arange(n, device=dev).repeat_interleave(2 * s)
    insert = torch.arange(2, device=dev).repeat_interleave(s).repeat(n).bool()
    count = counts.repeat(2 * n)
    point = torch.arange(s, device=dev).repeat(2 * n)
    needed = torch.where(insert, point < s - 1, point > 0)  # not x itself
    needed &= ~(insert & (point == 0))  # the baseline once, from the deletion curve
    if not with_insertion:
        needed &= ~insert
    todo = needed.nonzero().flatten()
    forward = channels_last_twin(model) if x.device.type == "cpu" else model
    scores = []
    for start in range(0, todo.numel(), batch):
        j = todo[start : start + batch]
        i, ins, k = image[j], insert[j], count[j]
        top = ranks[i] < k[:, None]  # [B, HW]: the k top-ranked positions
        keep = torch.where(ins[:, None], top, ~top)[:, None]
        flat = torch.where(keep, x.flatten(2)[i], base.flatten(2)[i])
        batch_x = flat.reshape(-1, *x.shape[1:])
        if batch_x.device.type == "cpu":
            batch_x = batch_x.contiguous(memory_format=torch.channels_last)
        scores.append(forward(batch_x).float().softmax(1).gather(1, classes[i, None])[:, 0])
    flat_curves = p.new_full((2 * n * s,), float("nan"))
    flat_curves[todo] = torch.cat(scores)
    curves = flat_curves.reshape(n, 2, s)
    deletion, insertion = curves[:, 0].clone(), curves[:, 1].clone()
    deletion[:, 0], insertion[:, -1] = p, p
    insertion[:, 0] = deletion[:, -1]
    return counts.float() / positions, deletion, insertion


@on_model_device
@in_precision("faithfulness")
@torch.no_grad()
def deletion_curve(
    model: nn.Module,
    x: torch.Tensor,
    saliency: torch.Tensor,
    classes: torch.Tensor,
    *,
    steps: int = 20,
    baseline: str = "zeros",
    batch_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(fractions [S], deletion [N, S])``: the deletion curve of :func:`faithfulness`
    alone (quantus's pixel-flipping, with ``HW / steps`` pixels a step), half the passes.

    Raises:
        ValueError: as :func:`faithfulness`.
    """
    n, _, h, w = x.shape
    if saliency.shape != (n, h, w) or classes.shape != (n,):
        raise ValueError(f"saliency must be [N, H, W] = {(n, h, w)} and classes [N]")
    batch_size = perturbed_batch(x, batch_size)
    if steps < 1 or batch_size < 1:
        raise ValueError(f"`steps` and `batch_size` must be >= 1, got {steps} and {batch_size}")
    with eval_mode(model):
        p = model(x).float().softmax(1).gather(1, classes[:, None])[:, 0]
        base = baseline_image(x, baseline)
        fractions, deletion, _ = _curves(model, x, saliency, classes, p, steps, base,
                                         batch_size, with_insertion=False)  # fmt: skip
    return fractions, deletion


# ----------------------------------------------------------------------------- over a data set

# Maps that know nothing of the model, to show what "better than chance" means.
REFERENCE_MAPS = ("random", "edges")


def reference_map(x: torch.Tensor, kind: str, seed: int = 0) -> torch.Tensor:
    """``[N, H, W]`` maps in [0, 1] that ignore the model: ``random`` (uniform noise,
    seeded) or ``edges`` (the Sobel gradient magnitude of the image, channels averaged)."""
    n, _, h, w = x.shape
    if kind == "random":
        g = torch.Generator().manual_seed(seed)
        return torch.rand(n, h, w, generator=g).to(x.device)
    if kind == "edges":
        gray = x.mean(1, keepdim=True)
        sx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], device=x.device)
        padded = F.pad(gray, (1, 1, 1, 1), mode="replicate")
        gx = F.conv2d(padded, sx.view(1, 1, 3, 3))
        gy = F.conv2d(padded, sx.t().reshape(1, 1, 3, 3))
        return minmax_scale(torch.sqrt(gx**2 + gy**2)[:, 0], 1)
    raise ValueError(f"unknown reference map {kind!r}; choose one of {', '.join(REFERENCE_MAPS)}")


@dataclass(frozen=True)
class MethodScore:
    """Faithfulness of one method over a data set: means over the images."""

    method: str
    images: int
    deletion_auc: float
    insertion_auc: float
    average_drop: float  # in [0, 1], lower is better
    increase: float  # fraction of images, higher is better
    fractions: torch.Tensor  # [S]
    deletion: torch.Tensor  # [S] mean curve
    insertion: torch.Tensor  # [S] mean curve
    infidelity: float | None = None  # captum's, normalised, of the map; lower is better
    sensitivity: float | None = None  # captum's max-sensitivity of the map; lower is better
    road_morf: float | None = None  # ROAD's mean probability, most relevant removed first
    road_lerf: float | None = None  # the same, least relevant first; higher is better
    mprt: float | None = None  # Spearman with the randomised network's maps; lower passes
    emprt: float | None = None  # relative rise of the maps' entropy there; higher passes
    random_logit: float | None = None  # SSIM with another class's maps; lower passes


@in_precision("faithfulness")
def score_methods(
    model: nn.Module,
    batches: Iterable[torch.Tensor],
    methods: Sequence[str],
    *,
    layer: str | None = None,
    steps: int = 20,
    baseline: str = "zeros",
    batch_size: int | None = None,
    progress: bool | None = None,
    options: Mapping[str, Any] | None = None,
    captum_metrics: bool = False,
    sharding: Sharding | None = None,
    road: bool = False,
    sanity: bool = False,
) -> list[MethodScore]:
    """Faithfulness of each method (a CAM method, a pixel attribution, or one of
    :data:`REFERENCE_MAPS`) over every image of ``batches``, for the top-1 class of each
    image. ``options`` go to the pixel attributions that take them (Integrated
    Gradients' ``steps``, ...); their ``baseline`` is ``baseline`` unless given there.
    With ``captum_metrics``, also infidelity (normalised, 10 Gaussian perturbations of
    standard deviation 0.1) and max-sensitivity (10 samples within 0.02) of each map.
    ``sharding``: the batches in shards (here or on Ray, kept for a rerun); every image's
    row is computed as in one pass (seeds go by image), so the table is the same. With
    ``road`` and ``sanity``, the ROAD and sanity columns (see the module doc); means skip
    the images where a measure is undefined (a constant map: NaN).
    """
    known = registry.names()
    unknown = [m for m in methods if m not in known and m not in REFERENCE_MAPS]
    if unknown:
        valid = ", ".join([*known, *REFERENCE_MAPS])
        raise ValueError(f"unknown method(s) {', '.join(unknown)}; choose from {valid}")
    how = sharding or Sharding()
    listed = list(batches)
    job = _ScoreShard(model, listed, tuple(methods), layer, steps, baseline, batch_size,
                      dict(options or {}), captum_metrics, road, sanity)  # fmt: skip
    parts = plan(len(listed), how.shards)
    folder = None if how.state_dir is None else ShardFolder(how.state_dir, job.manifest(parts))
    # one tick per method and batch, naming the method: one batch of slow methods
    # (Integrated Gradients with --captum-metrics) is minutes
    bar = progress_bar(
        total=len(listed) * len(methods), desc="faithfulness", unit="map", disable=progress is False
    )
    job.tick = None if how.ray else bar.update  # a Ray task cannot call back

    def shard_done(shard: Shard, kept: bool) -> None:
        if kept or how.ray is not None:
            bar.update(len(shard) * len(methods))

    gpus = 1.0 if model_device(model).type == "cuda" else 0.0
    with bar:
        states = run_shards(job, parts, ray=how.ray, folder=folder, part="faithfulness",
                            gpus=gpus, on_done=shard_done)  # fmt: skip
    return [_summary(m, states) for m in methods]


@dataclass
class _ScoreShard:
    """The faithfulness rows of some batches, as a task (see :func:`score_methods`)."""

    model: nn.Module
    batches: list[torch.Tensor]
    methods: tuple[str, ...]
    layer: str | None
    steps: int
    baseline: str
    batch_size: int | None
    options: dict[str, Any]
    captum_metrics: bool
    road: bool = False
    sanity: bool = False
    tick: Callable[[], Any] | None = None

    def __call__(self, shard: Shard) -> dict[str, Any]:
        device = model_device(self.model)
        seen = sum(x.shape[0] for x in self.batches[: shard.start])  # seeds go by image
        rows: dict[str, list[dict[str, torch.Tensor]]] = {m: [] for m in self.methods}
        fractions: dict[str, torch.Tensor] = {}
        randomised = fully_randomized(self.model) if self.sanity else None
        for x in self.batches[shard.start : shard.stop]:
            x = x.to(device)  # every batch where the model is
            with torch.no_grad(), eval_mode(self.model):
                logits = self.model(x)
            top1, count = logits.argmax(1), int(logits.shape[1])
            scored: list[tuple[torch.Tensor, dict[str, torch.Tensor]]] = []
            for m in self.methods:
                both = _explainer(self.model, m, self.layer, self.baseline, self.options, seen)
                maps, raw = both(x, top1)

                def explain(xs: torch.Tensor, c: torch.Tensor, both: Any = both) -> torch.Tensor:
                    return both(xs, c)[0]

                # the curves are the maps': a method whose maps equal an earlier one's
                # to the bit (Grad-CAM and Shapley-CAM here) has the same
                row = next((dict(r) for done, r in scored if torch.equal(done, maps)), {})
                if not row:
                    row = self._curves(x, maps, top1, seen)
                    scored.append((maps, dict(row)))
                fractions[m] = row.pop("fractions")
                if self.captum_metrics:
                    row["infidelity"] = infidelity(self.model, x, maps, top1, seed=seen).cpu()
                    row["sensitivity"] = sensitivity_max(explain, x, top1, seed=seen).cpu()
                if randomised is not None:
                    row.update(self._sanity_row(randomised, m, x, top1, raw, seen, count))
                rows[m].append(row)
                if self.tick is not None:
                    self.tick()
            seen += x.shape[0]
        return {
            m: {"fractions": fractions[m], **{k: torch.cat([r[k] for r in rs]) for k in rs[0]}}
            for m, rs in rows.items()
            if rs
        }

    def _curves(
        self, x: torch.Tensor, maps: torch.Tensor, classes: torch.Tensor, seed: int
    ) -> dict[str, torch.Tensor]:
        """The columns that depend on the maps alone: deletion and insertion (with the
        ``fractions`` removed at each step), and ROAD's."""
        f = faithfulness(self.model, x, maps, classes, steps=self.steps,
                         baseline=self.baseline, batch_size=self.batch_size)  # fmt: skip
        row = {k: getattr(f, k).cpu() for k in _ROW}
        row["fractions"] = f.fractions.cpu()
        if self.road:
            row.update(_road_row(self.model, x, maps, classes, seed))
        return row

    def _sanity_row(
        self,
        randomised: nn.Module,
        method: str,
        x: torch.Tensor,
        classes: torch.Tensor,
        raw: torch.Tensor,
        seed: int,
        count: int,
    ) -> dict[str, torch.Tensor]:
        """MPRT (every layer randomised), eMPRT and the random logit of ``raw`` maps
        (``count`` classes to draw the other class from)."""
        args = (method, self.layer, self.baseline, self.options, seed)
        moved = _explainer(randomised, *args)(x, classes)[1]
        other = _explainer(self.model, *args)(x, other_classes(classes, count, seed))[1]
        return {
            "mprt": similarity(raw, moved, "spearman_abs"),
            "emprt": entropy_rise(raw, moved),
            "random_logit": logit_similarity(raw, other),
        }

    def manifest(self, parts: list[Shard]) -> dict[str, Any]:
        return {
            "job": "faithfulness",
            "weights": weights_digest(self.model),
            "methods": list(self.methods),
            "layer": self.layer,
            "steps": self.steps,
            "baseline": self.baseline,
            "options": {k: repr(v) for k, v in sorted(self.options.items())},
            "captum_metrics": self.captum_metrics,
            "road": self.road,
            "sanity": self.sanity,
            "batches": [list(x.shape) for x in self.batches],
            "inputs": tensors_digest({str(i): x for i, x in enumerate(self.batches)}),
            "precision": current("faithfulness"),
            "shards": [[p.start, p.stop] for p in parts],
        }


_ROW = ("deletion", "insertion", "deletion_auc", "insertion_auc", "drop", "increase")


def _road_row(
    model: nn.Module, x: torch.Tensor, maps: torch.Tensor, classes: torch.Tensor, seed: int
) -> dict[str, torch.Tensor]:
    settings = RoadSettings(seed=seed)
    return {
        f"road_{order}": road_curves(model, x, maps, classes, order, settings).area()
        for order in ("morf", "lerf")
    }


def _explainer(
    model: nn.Module,
    method: str,
    layer: str | None,
    baseline: str,
    options: Mapping[str, Any],
    seed: int,
) -> Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """``explain(x, classes) -> (maps, raw)``: ``[N, H, W]`` maps of ``method`` in [0, 1]
    at the input's size, and the raw maps (signed where the method is) brought there
    bilinearly."""
    if method in REFERENCE_MAPS:

        def reference(x: torch.Tensor, classes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            maps = reference_map(x, method, seed=seed)
            return maps, maps

        return reference
    pixel = registry.method(method).family == registry.PIXEL
    chosen = registry.taken(method, {"baseline": baseline, **options}) if pixel else {}
    maker = registry.make(method, model, layer, **chosen)

    def explain(x: torch.Tensor, classes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        found = maker(x, classes=classes[:, None])
        return found.upsampled[:, 0], raw_map(found, x)

    return explain


def _summary(method: str, states: list[dict[str, Any]]) -> MethodScore:
    rows = [st[method] for st in states if st.get(method)]
    if not rows:
        raise ValueError("no images to score")
    every = {k: torch.cat([r[k] for r in rows]) for k in rows[0] if k != "fractions"}
    deletion, insertion = every["deletion"], every["insertion"]

    def mean(key: str) -> float | None:
        return float(every[key].double().nanmean()) if key in every else None

    return MethodScore(
        method=method,
        images=deletion.shape[0],
        deletion_auc=float(every["deletion_auc"].mean()),
        insertion_auc=float(every["insertion_auc"].mean()),
        average_drop=float(every["drop"].mean()),
        increase=float(every["increase"].float().mean()),
        fractions=rows[0]["fractions"],
        deletion=deletion.mean(0),
        insertion=insertion.mean(0),
        infidelity=mean("infidelity"),
        sensitivity=mean("sensitivity"),
        road_morf=mean("road_morf"),
        road_lerf=mean("road_lerf"),
        mprt=mean("mprt"),
        emprt=mean("emprt"),
        random_logit=mean("random_logit"),
    )


@on_model_device
@in_precision("faithfulness")
@renamed("target", "classes")
def infidelity(
    model: nn.Module,
    x: torch.Tensor,
    attributions: torch.Tensor,
    classes: torch.Tensor,
    *,
    perturb: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None,
    samples: int = 10,
    normalize: bool = True,
    seed: int = 0,
) -> torch.Tensor:
    """Infidelity (Yeh et al., 2019; captum's ``infidelity``): the mean over ``samples``
    perturbations ``I`` of ``(sum(attributions * I) - (f(x) - f(x - I)))^2`` for class
    ``classes``, per image ``[N]``; lower is better (``target``, the old name of
    ``classes``, still works for one release).

    Args:
        attributions: ``[N, C, H, W]``, or ``[N, H, W]`` maps (the same for every channel).
        perturb: ``perturb(inputs) -> (I, inputs - I)`` on the inputs repeated
            ``samples`` times each; default Gaussian noise of standard deviation 0.1
            (seeded by ``seed``).
        normalize: scale the attributions by the factor that minimises the error first
            (captum's ``normalize``), so maps of any scale compare.
    """
    if samples < 1:
        raise ValueError(f"`samples` must be at least 1, got {samples}")
    if attributions.shape == (x.shape[0], *x.shape[2:]):
        attributions = attributions[:, None].expand_as(x)
    if attributions.shape != x.shape:
        raise ValueError(
            f"attributions have shape {tuple(attributions.shape)}, not the inputs' "
            f"{tuple(x.shape)} or [N, H, W]"
        )
    n = x.shape[0]
    if perturb is None:
        g = torch.Generator().manual_seed(seed)  # drawn on the CPU: one answer on every device

        def perturb(inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            noise = 0.1 * torch.randn(inputs.shape, generator=g, device="cpu").to(inputs.device)
            return noise, inputs - noise

    with torch.no_grad(), eval_mode(model):
        expanded = x.repeat_interleave(samples, 0)
        noise, perturbed = perturb(expanded)
        t = classes.repeat_interleave(samples)
        at_x = model(x).float().gather(1, classes[:, None])[:, 0].repeat_interleave(samples)
        at_p = model(perturbed).float().gather(1, t[:, None])[:, 0]
        diffs = (at_x - at_p).view(n, samples)
        sums = (attributions.repeat_interleave(samples, 0) * noise).view(n * samples, -1)
        sums = sums.sum(1).view(n, samples)
        if normalize:
            aa, ab, bb = (sums**2).sum(1), (sums * diffs).sum(1), (diffs**2).sum(1)
            beta = torch.where(aa == 0, torch.zeros_like(ab), ab / aa.clamp_min(1e-30))
            return (beta * beta * aa - 2 * beta * ab + bb) / samples
        return ((sums - diffs) ** 2).sum(1) / samples


@renamed("target", "classes")
def sensitivity_max(
    explain: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    classes: torch.Tensor,
    *,
    radius: float = 0.02,
    samples: int = 10,
    seed: int = 0,
    perturb: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Max-sensitivity (Yeh et al., 2019; captum's ``sensitivity_max``): the largest
    relative change ``||e(x') - e(x)|| / ||e(x)||`` (Frobenius) of the explanation
    ``explain(inputs, classes)`` of ``classes`` over ``samples`` inputs ``x'``
    within ``radius`` of each image (uniform
    noise, seeded; or ``perturb(inputs) -> inputs'`` on the inputs repeated ``samples``
    times each), per image ``[N]``; lower is better."""
    if samples < 1:
        raise ValueError(f"`samples` must be at least 1, got {samples}")
    n = x.shape[0]
    if perturb is None:
        g = torch.Generator().manual_seed(seed)  # drawn on the CPU: one answer on every device

        def perturb(inputs: torch.Tensor) -> torch.Tensor:
            noise = torch.empty(inputs.shape, device="cpu").uniform_(-radius, radius, generator=g)
            return inputs + noise.to(inputs.device)

    # explanations may need gradients (Grad-CAM, Saliency): no no_grad around them
    base = explain(x, classes).detach().reshape(n, -1)
    moved = explain(perturb(x.repeat_interleave(samples, 0)), classes.repeat_interleave(samples))
    moved = moved.detach().reshape(n * samples, -1)
    with torch.no_grad():
        norm = torch.linalg.vector_norm(base, dim=1, keepdim=True)
        norm = torch.where(norm == 0, torch.ones_like(norm), norm).repeat_interleave(samples, 0)
        change = torch.linalg.vector_norm(base.repeat_interleave(samples, 0) - moved, dim=1)
        return (change[:, None] / norm).view(n, samples).amax(1)


__all__ = [
    "REFERENCE_MAPS",
    "Faithfulness",
    "MethodScore",
    "deletion_curve",
    "faithfulness",
    "infidelity",
    "perturbed_batch",
    "reference_map",
    "score_methods",
    "sensitivity_max",
]
