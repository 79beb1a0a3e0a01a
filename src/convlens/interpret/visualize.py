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
image gets a 2 px pad and 1 px jitter instead of 12 and 8. Many objectives run as one
batch: ``units`` x ``diversity`` images in one optimisation.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from convlens.core.hooks import capture, eval_mode, frozen, get_layer, relus_backward_as
from convlens.core.progress import progress_bar
from convlens.data.images import Preprocessing
from convlens.data.sources import Source

OBJECTIVES = ("channel", "neuron", "class", "direction", "layer")
PARAMS = ("fourier", "pixel")

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
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if param not in PARAMS:
            raise ValueError(f"unknown parameterisation {param!r}; choose fourier or pixel")
        self.param, self.h, self.w = param, h, w
        self.decorrelate = channels == 3 if decorrelate is None else decorrelate
        shape = (
            (batch, channels, h, w // 2 + 1, 2) if param == "fourier" else (batch, channels, h, w)
        )
        self.raw = nn.Parameter(torch.randn(*shape, generator=generator) * sd)
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
            return int(torch.randint(n, (1,), generator=g))

        x = F.pad(x, (self.pad,) * 4, mode="constant", value=0.5)
        x = _jitter(x, self.jitter, pick)
        scale = self.scales[pick(len(self.scales))]
        x = F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False)
        angle = math.radians(self.angles[pick(len(self.angles))])
        if angle:
            cos, sin = math.cos(angle), math.sin(angle)
            theta = torch.tensor([[cos, -sin, 0.0], [sin, cos, 0.0]], dtype=x.dtype)
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
    """What :func:`visualize` found for each objective."""

    layer: str
    objective: str
    negative: bool
    units: tuple[int, ...]  # the objectives: units, classes, or (0,) for direction/layer
    images: torch.Tensor  # [U, D, C, H, W] in [0, 1]
    curve: torch.Tensor  # [steps, U] objective at every step (mean over the D images)
    activation: torch.Tensor  # [U, D] objective of the final images, no transforms
    dead: tuple[int, ...]  # units with zero activation and zero gradient: not drawn
    diversity_similarity: torch.Tensor | None  # [U] mean pairwise Gram similarity
    dataset_max: torch.Tensor | None = None  # [U] data set's max of the objective
    dataset_min: torch.Tensor | None = None  # [U] and its min


def visualize(
    model: nn.Module,
    layer: str | None,
    units: list[int] | None = None,
    *,
    preprocessing: Preprocessing,
    objective: str = "channel",
    negative: bool = False,
    direction: torch.Tensor | None = None,
    diversity: int = 1,
    diversity_weight: float = 0.05,
    param: str = "fourier",
    steps: int = 256,
    lr: float = 0.1,
    size: int | None = None,
    seed: int = 0,
    redirect_steps: int = 16,
    transforms: Transforms | None = None,
    data: Source | None = None,
    progress: bool = False,
    on_step: Callable[[int, int], None] | None = None,
) -> Visualization:
    """Optimise images for ``objective`` of ``units`` of ``layer`` (see the module doc).

    Args:
        layer: the layer read (any layer for ``class``: None reads the logits).
        units: channels of ``layer`` (``channel``, ``neuron``) or classes (``class``);
            ignored for ``direction`` (a ``[C]`` vector over the layer's channels) and
            ``layer`` (the whole layer's squared activation, DeepDream).
        preprocessing: the model's own input convention (channels, size, mean, std).
        diversity: images per objective; with more than one, ``diversity_weight``
            times their mean pairwise similarity of Gram matrices is penalised.
        size: input side (default: the model's input size).
        transforms: the robustness transforms (default: :meth:`Transforms.for_size`).
        redirect_steps: the first steps back-propagate through ``nn.ReLU`` modules as
            Lucid's redirected ReLU (see :class:`_RedirectedReLU`).
        data: a data source: the data set's max and min of each objective, to compare;
            a unit whose data set max is not above 0 is dead, and so is one with zero
            activation and zero gradient for the starting images.
        on_step: called as ``on_step(done, steps)`` before each step; an exception it
            raises (a cancelled request) ends the optimisation.

    Raises:
        ValueError: unknown layer, objective or parameterisation, units out of range,
            ``steps`` < 1, a size the network cannot take, a direction of the wrong
            length, a non-finite objective.
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}; choose one of {', '.join(OBJECTIVES)}")
    if steps < 1:
        raise ValueError(f"`steps` must be at least 1, got {steps}")
    if diversity < 1:
        raise ValueError(f"`diversity` must be at least 1, got {diversity}")
    if param not in PARAMS:
        raise ValueError(f"unknown parameterisation {param!r}; choose fourier or pixel")
    side = size or preprocessing.input_size[0]
    channels = preprocessing.channels
    if layer is not None:
        get_layer(model, layer)
    elif objective != "class":
        raise ValueError(f"objective {objective!r} needs a layer")
    probe = _probe(model, layer, channels, side)
    width = probe.shape[1]
    targets = _targets(objective, units, width, direction, layer)
    u, d = len(targets), diversity
    g = torch.Generator().manual_seed(seed)
    image = ImageParam(u * d, channels, side, side, param, generator=g)
    opt = torch.optim.Adam(image.parameters(), lr=lr)
    transforms = transforms or Transforms.for_size(side)
    mean = torch.tensor(preprocessing.mean)[None, :, None, None]
    std = torch.tensor(preprocessing.std)[None, :, None, None]
    index = torch.tensor(targets).repeat_interleave(d)  # the objective of each image
    sign = -1.0 if negative else 1.0
    curve = []
    first_grad: torch.Tensor | None = None
    bar = progress_bar(range(steps), desc="visualize", unit="step", disable=not progress)
    redirect = [redirect_steps > 0]
    with eval_mode(model), frozen(model), relus_backward_as(model, _RedirectedReLU, redirect):
        for step in bar:
            if on_step is not None:
                on_step(step, steps)
            redirect[0] = step < redirect_steps
            opt.zero_grad()
            x = (_as_input(transforms(image(), g), preprocessing) - mean) / std
            acts = _read(model, layer, x)
            score = _objective(objective, acts, index, direction)
            if not torch.isfinite(score).all():
                raise ValueError(
                    f"the objective became {float(score.detach()[~torch.isfinite(score)][0])} "
                    "(not finite); lower `lr` or use the pixel parameterisation"
                )
            loss = -sign * score.sum()
            if d > 1 and diversity_weight:
                loss = loss + diversity_weight * _gram_similarity(acts, u, d).sum() * u * d
            loss.backward()
            if first_grad is None and image.raw.grad is not None:
                first_grad = image.raw.grad.detach().flatten(1).abs().sum(1).reshape(u, d).sum(1)
            opt.step()
            curve.append(score.detach().reshape(u, d).mean(1))
        bar.close()
        with torch.no_grad():
            final = image().detach()
            acts = _read(model, layer, (_as_input(final, preprocessing) - mean) / std)
            activation = _objective(objective, acts, index, direction).reshape(u, d)
            similarity = _gram_similarity(acts, u, d).reshape(u) if d > 1 else None
    assert first_grad is not None
    hi = lo = None
    if data is not None and objective in ("channel", "class"):
        hi, lo = dataset_extremes(model, data, layer, targets)
    dead = tuple(
        t
        for k, t in enumerate(targets)
        if (first_grad[k] == 0 and bool((activation[k] == 0).all()))
        or (hi is not None and objective == "channel" and float(hi[k]) <= 0)
    )
    return Visualization(
        layer=layer or "logits",
        objective=objective,
        negative=negative,
        units=tuple(targets),
        images=final.reshape(u, d, *final.shape[1:]),
        curve=torch.stack(curve),
        activation=activation,
        dead=dead,
        diversity_similarity=similarity,
        dataset_max=hi,
        dataset_min=lo,
    )


def _as_input(pixels: torch.Tensor, preprocessing: Preprocessing) -> torch.Tensor:
    """Pixels in [0, 1], as the files show them, to what the model's normalisation takes
    (inverted first when the model's convention says so)."""
    return 1.0 - pixels if preprocessing.invert else pixels


def layer_width(
    model: nn.Module, layer: str | None, preprocessing: Preprocessing, size: int | None = None
) -> int:
    """The number of channels (or classes) of ``layer``'s output."""
    side = size or preprocessing.input_size[0]
    return int(_probe(model, layer, preprocessing.channels, side).shape[1])


def _probe(model: nn.Module, layer: str | None, channels: int, side: int) -> torch.Tensor:
    """The layer's output for one blank input, or a clear error when it cannot run."""
    x = torch.zeros(1, channels, side, side)
    try:
        with eval_mode(model), torch.no_grad():
            out = _read(model, layer, x)
    except RuntimeError as e:
        raise ValueError(
            f"the network cannot take a {side}x{side} input ({e}); use a larger size"
        ) from e
    if out.ndim not in (2, 4):
        raise ValueError(f"layer {layer!r} outputs shape {tuple(out.shape)}, not [N, C, h, w]")
    return out


def _read(model: nn.Module, layer: str | None, x: torch.Tensor) -> torch.Tensor:
    if layer is None:
        return model(x)
    with capture(model, layer, detach=False) as store:
        model(x)
    return store[layer]


def _targets(
    objective: str, units: list[int] | None, width: int, direction: torch.Tensor | None,
    layer: str | None,
) -> list[int]:  # fmt: skip
    if objective in ("direction", "layer"):
        if objective == "direction":
            if direction is None:
                raise ValueError("objective direction needs a direction vector")
            if direction.shape != (width,):
                raise ValueError(
                    f"the direction has shape {tuple(direction.shape)}, but layer {layer!r} "
                    f"has {width} channels: give a vector of {width}"
                )
        return [0]
    if not units:
        raise ValueError("no units given")
    what = "classes" if objective == "class" else f"units of layer {layer!r}"
    bad = [k for k in units if not 0 <= int(k) < width]
    if bad:
        raise ValueError(f"{bad[:10]} out of range: there are {width} {what} (0..{width - 1})")
    return [int(k) for k in units]


def _objective(
    objective: str, acts: torch.Tensor, index: torch.Tensor, direction: torch.Tensor | None
) -> torch.Tensor:
    """``[B]``: the objective of each image (image ``i`` for target ``index[i]``)."""
    rows = torch.arange(acts.shape[0])
    if objective == "class":
        logits = acts if acts.ndim == 2 else acts.mean((2, 3))
        return logits[rows, index]
    if acts.ndim != 4:
        raise ValueError(
            f"objective {objective!r} needs [N, C, h, w] maps, got {tuple(acts.shape)}"
        )
    if objective == "channel":
        return acts[rows, index].mean((1, 2))
    if objective == "neuron":
        h, w = acts.shape[2], acts.shape[3]
        return acts[rows, index, h // 2, w // 2]
    if objective == "direction":
        assert direction is not None
        return (acts * direction.to(acts)[None, :, None, None]).sum(1).mean((1, 2))
    return acts.pow(2).mean((1, 2, 3))  # layer: DeepDream


def _gram_similarity(acts: torch.Tensor, u: int, d: int) -> torch.Tensor:
    """``[U]``: the mean cosine similarity of the Gram matrices of each pair among the
    ``d`` images of each objective (Lucid's diversity term)."""
    if acts.ndim != 4:
        acts = acts[:, :, None, None]
    flat = acts.flatten(2)  # [B, C, hw]
    gram = torch.bmm(flat, flat.transpose(1, 2)).flatten(1)  # [B, C * C]
    gram = F.normalize(gram, dim=1).reshape(u, d, -1)
    sim = torch.bmm(gram, gram.transpose(1, 2))  # [U, d, d]
    off = sim.sum((1, 2)) - sim.diagonal(dim1=1, dim2=2).sum(1)
    return off / (d * (d - 1))


@torch.no_grad()
def dataset_extremes(
    model: nn.Module, data: Source, layer: str | None, targets: list[int], batch_size: int = 256
) -> tuple[torch.Tensor, torch.Tensor]:
    """The data set's max and min of each target's spatial-mean activation (or logit)."""
    hi = torch.full((len(targets),), -math.inf)
    lo = torch.full((len(targets),), math.inf)
    idx = torch.tensor(targets)
    with eval_mode(model):
        for b in data.batches(batch_size):
            acts = _read(model, layer, b.x)
            values = (acts.mean((2, 3)) if acts.ndim == 4 else acts)[:, idx]
            hi = torch.maximum(hi, values.amax(0))
            lo = torch.minimum(lo, values.amin(0))
    return hi, lo


__all__ = [
    "COLOR_CORRELATION_SVD_SQRT",
    "OBJECTIVES",
    "PARAMS",
    "ImageParam",
    "Transforms",
    "Visualization",
    "color_matrix",
    "dataset_extremes",
    "fourier_to_image",
    "layer_width",
    "spectrum_scale",
    "to_rgb",
    "visualize",
]
