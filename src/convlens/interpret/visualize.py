"""Feature visualisation by optimisation (Olah et al. 2017, "Feature Visualization"):
the input a unit, a class, a direction or a whole layer responds to most (or least).

An image is a point of a parameter space made to look natural to the optimiser:

- ``fourier``: a spectrum ``[B, C, h, w // 2 + 1]`` (real and imaginary parts) scaled
  by ``1 / max(f, 1 / max(h, w)) ** decay`` (so that every frequency starts with the
  same energy as in natural images), through the inverse real FFT (orthonormal),
  divided by 4; ``pixel``: the pixels themselves.
- Colour: for RGB models the three channels are decorrelated with the square root of
  ImageNet's colour covariance (Lucid's matrix, its columns scaled to unit norm at most);
  one-channel models have nothing to decorrelate.
- A sigmoid squashes the result into [0, 1]; the model's own normalisation follows.

Each step the image passes random robustness transforms (pad, jitter, scale, rotate,
jitter) at Lucid's proportions for 224 px, scaled to the model's input size, so a 28 px
image gets a 2 px pad and 1 px jitter instead of 12 and 8. What is optimised is an
:class:`~convlens.interpret.objectives.Objective`; all its targets run as one batch of
``targets x images`` pictures.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from convlens.core.device import model_device
from convlens.core.hooks import (
    capture,
    channels_last_twin,
    eval_mode,
    frozen,
    get_layer,
    relus_backward_as,
)
from convlens.core.precision import autocast, current, in_precision
from convlens.core.progress import JobProgress
from convlens.core.shards import Shard, ShardFolder, Sharding, plan, run_shards, weights_digest
from convlens.data.images import Preprocessing
from convlens.data.sources import Source
from convlens.interpret.objectives import Batch, Objective, Sum, gram_similarity

PARAMS = ("fourier", "pixel")
CHECK_EVERY = 16  # steps between host checks that the objective is finite

# Lucid's square root of ImageNet's colour covariance (columns: decorrelated channels)
COLOR_CORRELATION_SVD_SQRT = np.asarray(
    [[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]], dtype=np.float32
)


def color_matrix() -> torch.Tensor:
    """The colour decorrelation matrix, scaled so that its largest column norm is 1."""
    m = COLOR_CORRELATION_SVD_SQRT
    return torch.from_numpy(m / np.max(np.linalg.norm(m, axis=0)))


def spectrum_scale(h: int, w: int, decay_power: float = 1.0) -> torch.Tensor:
    """``[h, w // 2 + 1]``: ``1 / max(f, 1 / max(h, w)) ** decay_power`` of the frequency
    magnitude ``f = sqrt(fx^2 + fy^2)`` of each coefficient of a real 2D FFT."""
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.fftfreq(w)[: w // 2 + 1]
    freqs = np.sqrt(fx * fx + fy * fy)
    return torch.from_numpy(1.0 / np.maximum(freqs, 1.0 / max(h, w)) ** decay_power).float()


def fourier_to_image(spectrum: torch.Tensor, h: int, w: int, scale: torch.Tensor) -> torch.Tensor:
    """``[B, C, h, w // 2 + 1, 2]`` real/imaginary parts -> ``[B, C, h, w]`` (before colour
    and squashing): scaled spectrum, orthonormal inverse real FFT, divided by 4."""
    scaled = torch.view_as_complex((scale[..., None] * spectrum).contiguous())
    return torch.fft.irfftn(scaled, s=(h, w), norm="ortho") / 4.0


def to_rgb(image: torch.Tensor, decorrelate: bool) -> torch.Tensor:
    """Colour decorrelation (3 channels) then a sigmoid into [0, 1]."""
    if decorrelate:
        m = color_matrix().to(image)
        image = torch.einsum("bchw,dc->bdhw", image, m)
    return torch.sigmoid(image)


class ImageParam(nn.Module):
    """A batch of images as trainable parameters (see the module doc)."""

    def __init__(
        self,
        batch: int,
        channels: int,
        h: int,
        w: int,
        param: str = "fourier",
        sd: float = 0.01,
        decorrelate: bool | None = None,
        generator: torch.Generator | Sequence[torch.Generator] | None = None,
    ) -> None:
        super().__init__()
        if param not in PARAMS:
            raise ValueError(f"unknown parameterisation {param!r}; choose fourier or pixel")
        self.param, self.h, self.w = param, h, w
        self.decorrelate = channels == 3 if decorrelate is None else decorrelate
        shape = (
            (batch, channels, h, w // 2 + 1, 2) if param == "fourier" else (batch, channels, h, w)
        )
        # drawn on the CPU (the same start on every device); move the module after. With
        # several generators, each draws an equal run of consecutive images
        if isinstance(generator, Sequence):
            per = batch // len(generator)
            start = torch.cat(
                [torch.randn(per, *shape[1:], generator=g, device="cpu") for g in generator]
            )
        else:
            start = torch.randn(*shape, generator=generator, device="cpu")
        self.raw = nn.Parameter(start * sd)
        self.register_buffer("scale", spectrum_scale(h, w), persistent=False)

    def forward(self) -> torch.Tensor:
        """The images ``[B, C, h, w]`` in [0, 1]."""
        if self.param == "fourier":
            scale = self.scale
            assert isinstance(scale, torch.Tensor)
            image = fourier_to_image(self.raw, self.h, self.w, scale)
        else:
            image = self.raw
        return to_rgb(image, self.decorrelate)


@dataclass(frozen=True)
class Transforms:
    """Lucid's robustness transforms, in pixels for an input of ``size``."""

    pad: int
    jitter: int
    scales: tuple[float, ...]
    angles: tuple[float, ...]
    jitter_after: int

    @classmethod
    def for_size(cls, size: int) -> Transforms:
        """Lucid's standard set for 224 px (pad 12, jitter 8, scale 0.9-1.1, rotate
        -10..10 degrees, jitter 4), with the pixel amounts scaled to ``size``."""
        s = size / 224
        return cls(
            pad=max(1, round(12 * s)),
            jitter=max(1, round(8 * s)),
            scales=tuple(1 + (i - 5) / 50 for i in range(11)),
            angles=tuple(float(a) for a in [*range(-10, 11), *([0] * 5)]),
            jitter_after=max(1, round(4 * s)),
        )

    def __call__(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        def pick(n: int) -> int:
            return int(torch.randint(n, (1,), generator=g, device="cpu"))

        x = F.pad(x, (self.pad,) * 4, mode="constant", value=0.5)
        x = _jitter(x, self.jitter, pick)
        scale = self.scales[pick(len(self.scales))]
        x = F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False)
        angle = math.radians(self.angles[pick(len(self.angles))])
        if angle:
            cos, sin = math.cos(angle), math.sin(angle)
            rows = [[cos, -sin, 0.0], [sin, cos, 0.0]]
            theta = torch.tensor(rows, dtype=x.dtype, device=x.device)
            grid = F.affine_grid(theta.expand(x.shape[0], 2, 3), list(x.shape), align_corners=False)
            x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
        return _jitter(x, self.jitter_after, pick)


class _RedirectedReLU(torch.autograd.Function):
    """ReLU whose gradient, for an image whose ordinary ReLU gradient is zero everywhere
    in the layer, still flows where it would raise a negative input (Lucid's redirected
    ReLU): a unit that is off for the starting image gets a way to turn on."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return x.clamp_min(0)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        plain = torch.where(x < 0, torch.zeros_like(grad), grad)
        # descending the loss lowers x where grad > 0: keep only the raising part
        redirected = torch.where((x < 0) & (grad > 0), torch.zeros_like(grad), grad)
        stuck = (plain.flatten(1) == 0).all(1).reshape(-1, *([1] * (x.ndim - 1)))
        return torch.where(stuck, redirected, plain)


def _jitter(x: torch.Tensor, d: int, pick: Any) -> torch.Tensor:
    dx, dy = pick(d + 1), pick(d + 1)  # lucent's jitter: a random crop d px smaller
    return x[..., dy : x.shape[2] - d + dy, dx : x.shape[3] - d + dx]


@dataclass(frozen=True)
class Visualization:
    """What :func:`visualize` found for each target of the objective."""

    layer: str
    objective: str  # the part reported ("channel", ...), or the whole sum written out
    negative: bool  # the reported part is minimised
    units: tuple[int, ...]  # the objective's targets: units, classes, or (0,) for none
    images: torch.Tensor  # [U, D, C, H, W] in [0, 1]
    curve: torch.Tensor  # [steps, U] reported part at every step (mean over the D images)
    activation: torch.Tensor  # [U, D] reported part of the final images, no transforms
    dead: tuple[int, ...]  # units with zero activation and zero gradient: not drawn
    diversity_similarity: torch.Tensor | None  # [U] mean pairwise Gram similarity
    dataset_max: torch.Tensor | None = None  # [U] data set's max of the objective
    dataset_min: torch.Tensor | None = None  # [U] and its min


@dataclass(frozen=True)
class VisualizeSettings:
    """How :func:`visualize` optimises.

    Attributes:
        steps: Adam steps.
        lr: Adam's learning rate.
        param: the image's parameterisation, ``fourier`` or ``pixel``.
        size: input side (``None``: the model's input size).
        images: images per target; with more than one, add a ``diversity`` term to the
            objective to make them differ.
        seed: with each target's unit (or class), the seed of its starting images; alone,
            the seed of the transforms (the same sequence for every pass). A target's
            picture is thus the same whichever targets run beside it.
        redirect_steps: the first steps back-propagate through ``nn.ReLU`` modules as
            Lucid's redirected ReLU (see :class:`_RedirectedReLU`).
        transforms: the robustness transforms (``None``: :meth:`Transforms.for_size`).
        batch_size: targets optimised in one pass (``None``: 128 for inputs up to 64 px,
            16 above); shards cut at its multiples.
    """

    steps: int = 256
    lr: float = 0.1
    param: str = "fourier"
    size: int | None = None
    images: int = 1
    seed: int = 0
    redirect_steps: int = 16
    transforms: Transforms | None = None
    batch_size: int | None = None

    def check(self) -> None:
        """Raise ``ValueError`` naming the first setting out of range."""
        if self.steps < 1:
            raise ValueError(f"`steps` must be at least 1, got {self.steps}")
        if self.images < 1:
            raise ValueError(f"`images` must be at least 1, got {self.images}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"`batch_size` must be at least 1, got {self.batch_size}")
        if self.param not in PARAMS:
            raise ValueError(f"unknown parameterisation {self.param!r}; choose fourier or pixel")


@in_precision("visualize")
def visualize(
    model: nn.Module,
    objective: Objective,
    preprocessing: Preprocessing,
    settings: VisualizeSettings | None = None,
    *,
    data: Source | None = None,
    progress: bool = False,
    on_step: Callable[[int, int], None] | None = None,
    sharding: Sharding | None = None,
) -> Visualization:
    """Optimise images for ``objective``, e.g. ``channel("layer4", [3, 7]) - 0.05 *
    diversity("layer4")`` (see the module doc and :mod:`convlens.interpret.objectives`).

    Args:
        objective: what to maximise; ``-objective`` minimises.
        preprocessing: the model's own input convention (channels, size, mean, std).
        settings: steps, learning rate, parameterisation, size, images per target.
        data: a data source for the data set's max and min of a ``channel`` or ``class``
            objective (a unit whose max is not above 0 is dead, as is one with zero
            activation and gradient for the starting images).
        on_step: called as ``on_step(done, steps)`` before each step (of every pass); an
            exception it raises (a cancelled request) ends the optimisation.
        sharding: the targets in shards (at multiples of ``batch_size``), here or on
            Ray, kept for a rerun (:class:`~convlens.core.shards.Sharding`); the
            pictures are the same for any number of shards.

    Raises:
        ValueError: a bad layer, unit, setting, size or direction; a non-finite objective.
        ShardError: a shard failed for good (the others are kept in ``state_dir``), a
            ``state_dir`` of another job, or a cluster that does not answer.
    """
    s = settings or VisualizeSettings()
    side = _checked_side(model, objective, preprocessing, s)
    device = model_device(model)
    task = _Passes(model, objective, preprocessing, side, s, current("visualize", device))
    how = sharding or Sharding()
    parts = plan(len(task.targets), how.shards, task.batch)
    folder = None if how.state_dir is None else ShardFolder(how.state_dir, task.manifest(parts))
    counter = JobProgress(task.steps(0, len(task.targets)), show=progress, on_step=on_step,
                          here=how.ray is None, desc="visualize", unit="step",
                          size=lambda shard: task.steps(shard.start, shard.stop))  # fmt: skip
    task.on_step = counter.advance if how.ray is None else None  # a Ray task cannot call back
    gpus = 1.0 if device.type == "cuda" else 0.0
    with counter.bar:
        states = run_shards(
            task, parts, ray=how.ray, folder=folder, part="units", gpus=gpus, on_done=counter.shard
        )
    return _answer(model, objective, task.targets, _merged(states), data)


def _answer(
    model: nn.Module,
    objective: Objective,
    targets: tuple[int, ...],
    got: dict[str, torch.Tensor],
    data: Source | None,
) -> Visualization:
    reported, negative = _reported(objective)
    hi = lo = None
    if data is not None and reported.kind in ("channel", "class"):
        hi, lo = dataset_extremes(model, data, reported.layer, list(targets))
    off = (got["grad"] == 0) & (got["activation"] == 0).all(1)
    if hi is not None and reported.kind == "channel":
        off |= hi <= 0
    return Visualization(
        layer=reported.layer or "logits",
        objective=reported.kind if reported.kind != "sum" else repr(reported),
        negative=negative,
        units=targets,
        images=got["images"],
        curve=got["curve"],
        activation=got["activation"],
        dead=tuple(t for t, o in zip(targets, off.tolist(), strict=True) if o),
        diversity_similarity=got.get("similarity"),
        dataset_max=hi,
        dataset_min=lo,
    )


def _merged(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The shards' tensors joined in target order (the curve's targets are its columns)."""
    return {k: torch.cat([st[k] for st in states], 1 if k == "curve" else 0) for k in states[0]}


def target_seed(seed: int, target: int) -> int:
    """The seed of ``target``'s starting images: the same whichever targets, passes or
    shards run beside it."""
    digest = hashlib.sha256(f"convlens/visualize/{seed}/{target}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def _checked_side(
    model: nn.Module, objective: Objective, preprocessing: Preprocessing, s: VisualizeSettings
) -> int:
    """The input side, once the settings, the objective's layers and its targets are
    checked against the model."""
    if not isinstance(objective, Objective):
        raise TypeError(
            "visualize takes an objective, e.g. visualize(model, channel('layer4', [3, 7]), "
            "preprocessing) (see convlens.interpret.objectives)"
        )
    s.check()
    side = s.size or preprocessing.input_size[0]
    layers = objective.layers()
    for name in layers:
        if name is not None:
            get_layer(model, name)
    objective.check(_widths(model, layers, preprocessing.channels, side))
    return side


@dataclass
class _Passes:
    """Targets of a visualisation, optimised ``batch`` at a time: a task over a shard of
    the targets (picklable, so that it can run in a Ray worker)."""

    model: nn.Module
    objective: Objective
    preprocessing: Preprocessing
    side: int
    s: VisualizeSettings
    precision: str = "fp32"
    on_step: Callable[[int], None] | None = None

    @property
    def targets(self) -> tuple[int, ...]:
        return tuple(self.objective.targets or (0,))

    @property
    def batch(self) -> int:
        return self.s.batch_size or (128 if self.side <= 64 else 16)

    def steps(self, start: int, stop: int) -> int:
        """Optimisation steps of targets ``start`` to ``stop`` (every pass's)."""
        return -(-(stop - start) // self.batch) * self.s.steps

    def manifest(self, parts: list[Shard]) -> dict[str, Any]:
        """What the shards depend on: a folder of shards serves only this job."""
        s = self.s
        return {
            "job": "visualize",
            "weights": weights_digest(self.model),
            "objective": repr(self.objective),
            "targets": list(self.targets),
            "preprocessing": repr(self.preprocessing),
            "settings": {
                "steps": s.steps,
                "lr": s.lr,
                "param": s.param,
                "size": self.side,
                "images": s.images,
                "seed": s.seed,
                "redirect_steps": s.redirect_steps,
                "transforms": repr(s.transforms),
                "batch_size": self.batch,
            },
            "precision": self.precision,
            "shards": [[p.start, p.stop] for p in parts],
        }

    def __call__(self, shard: Shard) -> dict[str, torch.Tensor]:
        device = model_device(self.model)
        with eval_mode(self.model), frozen(self.model), autocast(self.precision, device):
            # on the CPU the passes run through a channels-last copy (evaluating, frozen):
            # fashion-cnn's forward and backward take 1.25x less time, resnet18's 1.1x
            model = channels_last_twin(self.model) if device.type == "cpu" else self.model
            passes = [
                self._pass(model, first, min(first + self.batch, shard.stop), device)
                for first in range(shard.start, shard.stop, self.batch)
            ]
        return _merged(passes)

    def _pass(
        self, model: nn.Module, first: int, stop: int, device: torch.device
    ) -> dict[str, torch.Tensor]:
        g, d = stop - first, self.s.images
        group = torch.arange(g, device=device).repeat_interleave(d)
        batch = Batch(group, g, d, first, len(self.targets))
        image, curve, grad = self._optimise(model, batch)
        final, activation, similarity = _final(
            model, self.objective, image(), self.preprocessing, batch
        )
        state = {
            "images": final.reshape(g, d, *final.shape[1:]).float().cpu(),
            "curve": curve.float().cpu(),
            "activation": activation.float().cpu(),
            "grad": grad.float().cpu(),
        }
        if similarity is not None:
            state["similarity"] = similarity.float().cpu()
        return state

    def _optimise(
        self, model: nn.Module, batch: Batch
    ) -> tuple[ImageParam, torch.Tensor, torch.Tensor]:
        """Adam for ``steps`` steps on the batch's images, maximising the batch's sum of
        the objective; returns the images, the reported part's curve ``[steps, G]`` and
        each group's gradient magnitude at the first step ``[G]``."""
        objective, s = self.objective, self.s
        reported, _ = _reported(objective)
        layers = objective.layers()
        u, d = batch.groups, batch.per_group
        starts = [torch.Generator().manual_seed(target_seed(s.seed, t))
                  for t in self.targets[batch.first : batch.first + u]]  # fmt: skip
        channels = self.preprocessing.channels
        image = ImageParam(u * d, channels, self.side, self.side, s.param, generator=starts)
        image = image.to(batch.group.device)
        g = torch.Generator().manual_seed(s.seed)  # the transforms: one sequence per pass
        transforms = s.transforms or Transforms.for_size(self.side)
        opt = torch.optim.Adam(image.parameters(), lr=s.lr)
        curve = []
        first_grad: torch.Tensor | None = None
        redirect = [s.redirect_steps > 0]
        finite = torch.ones((), dtype=torch.bool, device=image.raw.device)
        with relus_backward_as(model, _RedirectedReLU, redirect):
            for step in range(s.steps):
                if self.on_step is not None:
                    self.on_step(1)
                redirect[0] = step < s.redirect_steps
                opt.zero_grad()
                x = _normalized(transforms(image(), g), self.preprocessing)
                acts = _read(model, layers, x)
                total = objective.score(acts, batch)
                # checked on the host every CHECK_EVERY steps, not each step: reading a
                # GPU value waits for the GPU (a NaN step only makes the steps after NaN)
                finite &= torch.isfinite(total.detach()).all()
                if (step + 1) % CHECK_EVERY == 0 or step + 1 == s.steps:
                    _check_finite(finite, step)
                (-total.sum()).backward()
                if first_grad is None and image.raw.grad is not None:
                    grad = image.raw.grad.detach().flatten(1).abs().sum(1)
                    first_grad = grad.reshape(u, d).sum(1)
                opt.step()
                curve.append(reported.score(acts, batch).detach().reshape(u, d).mean(1))
        assert first_grad is not None
        return image, torch.stack(curve), first_grad


def _check_finite(finite: torch.Tensor, step: int) -> None:
    if not bool(finite):
        raise ValueError(
            f"the objective became NaN or infinite (not finite) by step {step + 1}; lower "
            "`lr` or use the pixel parameterisation"
        )


@torch.no_grad()
def _final(
    model: nn.Module,
    objective: Objective,
    pixels: torch.Tensor,
    preprocessing: Preprocessing,
    batch: Batch,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The final pictures (no transforms), the reported part's score of each ``[G, D]``
    and, with several pictures per group, each group's Gram similarity ``[G]``."""
    reported, _ = _reported(objective)
    u, d = batch.groups, batch.per_group
    final = pixels.detach()
    acts = _read(model, objective.layers(), _normalized(final, preprocessing))
    activation = reported.score(acts, batch).reshape(u, d)
    similarity = None
    if d > 1:
        similarity = gram_similarity(acts[_diversity_layer(objective)], u, d).reshape(u)
    return final, activation, similarity


def _reported(objective: Objective) -> tuple[Objective, bool]:
    """The part reported as the activation (the objective without its regularisers: one
    part as it is, its sign apart, or their sum) and whether it is minimised."""
    main = [(w, part) for w, part in objective.terms() if not part.regularizer]
    if not main:
        raise ValueError("the objective has only regularisers (diversity): add what to show")
    if len(main) == 1:
        return main[0][1], main[0][0] < 0
    return Sum(main), False


def _diversity_layer(objective: Objective) -> str | None:
    regular = [part.layer for _, part in objective.terms() if part.regularizer]
    return regular[0] if regular else objective.layer


def _normalized(pixels: torch.Tensor, preprocessing: Preprocessing) -> torch.Tensor:
    """Pixels in [0, 1], as the files show them, to the model's input: inverted first
    when the model's convention says so, then its mean and std."""
    x = 1.0 - pixels if preprocessing.invert else pixels
    mean = torch.tensor(preprocessing.mean, device=x.device)[None, :, None, None]
    std = torch.tensor(preprocessing.std, device=x.device)[None, :, None, None]
    return (x - mean) / std


def layer_width(
    model: nn.Module, layer: str | None, preprocessing: Preprocessing, size: int | None = None
) -> int:
    """The number of channels (or classes) of ``layer``'s output."""
    side = size or preprocessing.input_size[0]
    return _widths(model, [layer], preprocessing.channels, side)[layer]


def _widths(
    model: nn.Module, layers: list[str | None], channels: int, side: int
) -> dict[str | None, int]:
    """The channels of each layer's output for one blank input, or a clear error when
    the network cannot run on it."""
    device = model_device(model)
    x = torch.zeros(1, channels, side, side, device=device)
    try:
        with eval_mode(model), torch.no_grad():
            acts = _read(model, layers, x)
    except RuntimeError as e:
        raise ValueError(
            f"the network cannot take a {side}x{side} input ({e}); use a larger size"
        ) from e
    for name, out in acts.items():
        if out.ndim not in (2, 4):
            raise ValueError(f"layer {name!r} outputs shape {tuple(out.shape)}, not [N, C, h, w]")
    return {name: int(out.shape[1]) for name, out in acts.items()}


def _read(
    model: nn.Module, layers: list[str | None], x: torch.Tensor
) -> dict[str | None, torch.Tensor]:
    """The outputs of ``layers`` (``None``: the model's own output) for ``x``."""
    named = [name for name in layers if name is not None]
    if not named:
        return {None: model(x)}
    with capture(model, named, detach=False) as store:
        out = model(x)
    acts: dict[str | None, torch.Tensor] = {name: store[name] for name in named}
    if None in layers:
        acts[None] = out
    return acts


@torch.no_grad()
def dataset_extremes(
    model: nn.Module, data: Source, layer: str | None, targets: list[int], batch_size: int = 256
) -> tuple[torch.Tensor, torch.Tensor]:
    """The data set's max and min of each target's spatial-mean activation (or logit)."""
    device = model_device(model)
    hi = torch.full((len(targets),), -math.inf, device=device)
    lo = torch.full((len(targets),), math.inf, device=device)
    idx = torch.tensor(targets, device=device)
    with eval_mode(model):
        for b in data.batches(batch_size):
            acts = _read(model, [layer], b.x.to(device))[layer]
            values = (acts.mean((2, 3)) if acts.ndim == 4 else acts)[:, idx]
            hi = torch.maximum(hi, values.amax(0))
            lo = torch.minimum(lo, values.amin(0))
    return hi.cpu(), lo.cpu()


__all__ = [
    "COLOR_CORRELATION_SVD_SQRT",
    "PARAMS",
    "ImageParam",
    "Transforms",
    "Visualization",
    "VisualizeSettings",
    "color_matrix",
    "dataset_extremes",
    "fourier_to_image",
    "layer_width",
    "spectrum_scale",
    "target_seed",
    "to_rgb",
    "visualize",
]
