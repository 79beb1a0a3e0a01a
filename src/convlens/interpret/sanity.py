"""Sanity checks (Adebayo et al., NeurIPS 2018, "Sanity Checks for Saliency Maps"): do a
method's maps depend on the model? The model parameter randomisation test (MPRT)
re-initialises the network's layers one by one, from the output down (``top_down``,
cascading), from the input up (``bottom_up``) or one at a time (``independent``), and
compares each image's map with the one of the trained network: a method whose maps stay
the same explains the image, not the model.

The randomisation is quantus 0.6.0's (``get_random_layer_generator``): every module with
``reset_parameters`` (BatchNorm included) in ``named_modules`` order, re-initialised by
its own ``reset_parameters`` after ``torch.manual_seed(seed + 1)``; here inside
``torch.random.fork_rng``, so the caller's random state is left as it was. The
similarities are those of :mod:`convlens.interpret.similarity` (quantus's default: the
Spearman rank correlation of the absolute maps).

The later tests, each equal to quantus 0.6.0's given the same weights, noise and seeds:

- **sMPRT** (Hedström et al., 2024): MPRT on maps averaged over ``samples`` noisy copies
  of each input (Gaussian noise of ``magnitude`` times the image's value range; the last
  copy is the image itself), drawn from ``numpy.random.RandomState(seed)`` in quantus's
  order (the trained network's maps, then each randomised copy's);
- **eMPRT** (Hedström et al., 2024): the relative rise of each map's discrete entropy
  (100 equal bins) once every layer is randomised, ``(H(random) - H(trained)) / H(trained)``:
  a map that becomes noise when the model does rises;
- **random logit** (Sixt et al., ICML 2020): the similarity (SSIM by default) of each
  image's map for its class with its map for another class drawn at random
  (``RandomState(seed)``, quantus's draw); maps are scaled by their largest absolute value
  first (quantus's ``normalise_by_max`` per image).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from convlens.core.device import on_model_device
from convlens.core.hooks import eval_mode, get_layer
from convlens.interpret.maps.base import ClassMaps
from convlens.interpret.similarity import MEASURES, by_max, entropy, similarity, spearman
from convlens.interpret.units import upsample

ORDERS = ("top_down", "bottom_up", "independent")


def resettable_layers(model: nn.Module) -> list[str]:
    """The layers :func:`randomized_layers` re-initialises, in ``named_modules`` order.

    Raises:
        ValueError: a model with none.
    """
    names = [name for name, m in model.named_modules() if hasattr(m, "reset_parameters")]
    if not names:
        raise ValueError(
            f"{type(model).__name__} has no layer with parameters to randomise "
            "(no module with reset_parameters)"
        )
    return names


def _reset(model: nn.Module, name: str, seed: int) -> None:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 1)
        get_layer(model, name).reset_parameters()  # type: ignore[operator]


def randomized_layers(
    model: nn.Module, order: str = "top_down", seed: int = 42, layers: Sequence[str] | None = None
) -> Iterator[tuple[str, nn.Module]]:
    """Yield ``(layer, model)``: a copy of ``model`` with one more layer re-initialised
    (``independent``: that layer alone), in ``order`` (see the module doc); ``layers``:
    only these (each must have parameters to re-initialise). The copy is the same object
    each time: use it before asking for the next.

    Raises:
        ValueError: an unknown order or layer, a named layer with no parameters, or a
            model with no layer to re-initialise.
    """
    if order not in ORDERS:
        raise ValueError(f"order must be one of {', '.join(ORDERS)}, got {order!r}")
    twin = copy.deepcopy(model)
    names = resettable_layers(twin)
    if layers is not None:
        for name in layers:
            get_layer(twin, name)  # an unknown name: the error lists the layers
            if name not in names:
                raise ValueError(
                    f"layer {name!r} has no parameters to randomise; layers that have: "
                    + ", ".join(names)
                )
        names = [n for n in names if n in set(layers)]
    original = copy.deepcopy(model.state_dict())
    for name in names[::-1] if order == "top_down" else names:
        if order == "independent":
            twin.load_state_dict(original)
        _reset(twin, name, seed)
        yield name, twin


def fully_randomized(model: nn.Module, seed: int = 42) -> nn.Module:
    """A copy of ``model`` with every layer re-initialised: the last step of either
    cascade (each layer's new weights depend on the seed alone, not on the order)."""
    twin = copy.deepcopy(model)
    for name in resettable_layers(twin):
        _reset(twin, name, seed)
    return twin.eval()


Explain = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class RandomisationSettings:
    """How :func:`model_randomisation` randomises and compares (see the module doc)."""

    order: str = "top_down"
    seed: int = 42
    measures: tuple[str, ...] = ("spearman_abs",)  # of similarity.MEASURES
    samples: int = 1  # sMPRT: maps averaged over this many noisy inputs (1: MPRT)
    magnitude: float = 0.1  # sMPRT's noise, times each image's value range
    keep: int = 0  # keep the maps of this many first images at every step (figures)
    layers: tuple[str, ...] | None = None  # only these layers (default: every one)


@dataclass(frozen=True)
class Randomisation:
    """How much each image's map stays the same as the network's layers are randomised."""

    method: str
    order: str
    layers: tuple[str, ...]  # in the order randomised
    similarity: dict[str, torch.Tensor]  # measure -> [layers, N] against the trained maps
    maps: torch.Tensor | None = None  # [1 + layers, keep, H, W]: trained, then each step

    def last(self, measure: str = "spearman_abs") -> torch.Tensor:
        """``[N]``: the similarity once every layer is randomised (cascading orders)."""
        return self.similarity[measure][-1]


def model_randomisation(
    model: nn.Module,
    x: torch.Tensor,
    classes: torch.Tensor,
    explain: Explain,
    settings: RandomisationSettings | None = None,
    method: str = "",
    on_step: Callable[[str], object] | None = None,
) -> Randomisation:
    """MPRT (sMPRT with ``settings.samples > 1``): ``explain(model, x, classes)``
    (``[N, H, W]`` maps) of the trained ``model`` against the same for each randomised
    copy (:func:`randomized_layers`), by each of ``settings.measures``; ``on_step(layer)``
    after each copy's maps (a progress bar's tick).

    Raises:
        ValueError: an unknown order, layer or measure, a named layer with no
            parameters, or a model with no layer to re-initialise.
    """
    s = settings or RandomisationSettings()
    unknown = [m for m in s.measures if m not in MEASURES]
    if unknown:
        raise ValueError(f"unknown similarity {unknown[0]!r}; choose one of {', '.join(MEASURES)}")
    if s.samples < 1:
        raise ValueError(f"`samples` must be at least 1, got {s.samples}")
    rng = np.random.RandomState(s.seed)
    with eval_mode(model):
        reference = _smoothed(explain, model, x, classes, s, rng)
    names: list[str] = []
    rows: dict[str, list[torch.Tensor]] = {m: [] for m in s.measures}
    kept = [reference[: s.keep].detach().cpu()]
    for name, twin in randomized_layers(model, s.order, s.seed, s.layers):
        twin.eval()  # a copy: its mode is its own
        maps = _smoothed(explain, twin, x, classes, s, rng)
        names.append(name)
        for measure in s.measures:
            rows[measure].append(similarity(reference, maps, measure))
        kept.append(maps[: s.keep].detach().cpu())
        if on_step is not None:
            on_step(name)
    return Randomisation(
        method,
        s.order,
        tuple(names),
        {m: torch.stack(r) for m, r in rows.items()},
        torch.stack(kept) if s.keep else None,
    )


def _smoothed(
    explain: Explain,
    model: nn.Module,
    x: torch.Tensor,
    classes: torch.Tensor,
    s: RandomisationSettings,
    rng: np.random.RandomState,
) -> torch.Tensor:
    """The maps of ``x``, averaged over ``s.samples`` noisy copies (sMPRT; the last copy
    noiseless, the noise drawn as quantus draws it)."""
    if s.samples == 1:
        return explain(model, x, classes).detach()
    dims = tuple(range(1, x.ndim))
    span = (x.amax(dims, keepdim=True) - x.amin(dims, keepdim=True)).double().cpu()
    total: torch.Tensor | None = None
    for i in range(s.samples):
        if i == s.samples - 1:
            noisy = x
        else:
            noise = torch.from_numpy(rng.randn(*x.shape)) * s.magnitude * span
            noisy = (x.detach().cpu().double() + noise).to(x.dtype).to(x.device)
        part = explain(model, noisy, classes).detach() / s.samples
        total = part if total is None else total + part
    assert total is not None
    return total


def data_randomisation(
    model: nn.Module,
    other: nn.Module,
    x: torch.Tensor,
    classes: torch.Tensor,
    explain: Explain,
    measures: Sequence[str] = ("spearman_abs",),
) -> dict[str, torch.Tensor]:
    """The data randomisation test (Adebayo et al., 2018): ``{measure: [N]}``, how alike
    each image's map from ``model`` is to its map from ``other``, the same architecture
    trained on labels permuted at random (``convlens train --preset shuffled-labels``);
    lower passes.

    Raises:
        ValueError: an unknown measure, or networks whose maps differ in shape.
    """
    with eval_mode(model), eval_mode(other):
        a = explain(model, x, classes).detach()
        b = explain(other, x, classes).detach()
    return {m: similarity(a, b, m) for m in measures}


@on_model_device
def efficient_randomisation(
    model: nn.Module,
    x: torch.Tensor,
    classes: torch.Tensor,
    explain: Explain,
    seed: int = 42,
    bins: int = 100,
) -> torch.Tensor:
    """eMPRT: ``[N]``, the relative rise of each map's discrete entropy (``bins`` equal
    bins) from the trained ``model`` to the copy with every layer randomised; higher
    passes (see the module doc)."""
    with eval_mode(model):
        trained = explain(model, x, classes)
    return entropy_rise(trained, explain(fully_randomized(model, seed), x, classes), bins)


def entropy_rise(trained: torch.Tensor, randomised: torch.Tensor, bins: int = 100) -> torch.Tensor:
    """``[N]``: eMPRT's score of two batches of maps, ``(H(randomised) - H(trained)) /
    H(trained)`` with ``H`` the discrete entropy in ``bins`` equal bins (NaN where the
    trained map's entropy is zero)."""
    before, after = entropy(trained, bins), entropy(randomised, bins)
    rise = (after - before) / before
    return torch.where(before > 0, rise, torch.nan).float()


def other_classes(classes: torch.Tensor, count: int, seed: int = 42) -> torch.Tensor:
    """``[N]``: for each image a class other than ``classes[i]`` (of ``count``), drawn
    uniformly as quantus's random-logit test draws it."""
    n = classes.shape[0]
    if count < 2:
        raise ValueError("the random-logit test needs a model with at least 2 classes")
    draw = torch.from_numpy(np.random.RandomState(seed).randint(0, count - 1, n))
    c = classes.cpu()
    return (draw + (draw >= c).long()).to(classes.device)


@on_model_device
def random_logit(
    model: nn.Module,
    x: torch.Tensor,
    classes: torch.Tensor,
    explain: Explain,
    seed: int = 42,
    measure: str = "ssim",
) -> torch.Tensor:
    """The random-logit test (Sixt et al., 2020): ``[N]``, the similarity (``measure``)
    of each image's map for ``classes[i]`` with its map for a random other class; lower
    passes. Maps are scaled by their largest absolute value first."""
    with eval_mode(model), torch.no_grad():
        count = int(model(x[:1]).shape[1])
    others = other_classes(classes, count, seed)
    with eval_mode(model):
        a = explain(model, x, classes).detach()
        b = explain(model, x, others).detach()
    return logit_similarity(a, b, measure)


def logit_similarity(
    maps: torch.Tensor, others: torch.Tensor, measure: str = "ssim"
) -> torch.Tensor:
    """``[N]``: the random-logit test's score of each map against the same image's map for
    another class, both scaled by their largest absolute value first."""
    return similarity(by_max(maps), by_max(others), measure)


def map_explainer(
    method: str, layer: str | None = None, options: dict[str, object] | None = None
) -> Explain:
    """``explain(model, x, classes)`` for a map method of either family (a registry
    name): each image's raw map for its class (signed where the method is), at the
    input's size (bilinear from a layer's resolution), ``[N, H, W]``.

    Raises:
        ValueError: not a map method.
    """
    from convlens.core.device import model_device
    from convlens.core.precision import reduced
    from convlens.interpret.maps import registry
    from convlens.interpret.maps.pixel import PixelAttribution

    row = registry.method(method)  # checks the name

    def explain(model: nn.Module, x: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        maker = registry.make(method, model, layer, **(options or {}))
        device = model_device(model)
        if isinstance(maker, PixelAttribution) and x.device == device:
            # the attribution alone: class_maps would add a forward pass for the logits
            with reduced(method, device, row.bf16), eval_mode(model):
                return maker.attribute(x, classes).sum(1).detach().float()
        return raw_map(maker(x, classes=classes[:, None]), x)

    return explain


def raw_map(found: ClassMaps, x: torch.Tensor) -> torch.Tensor:
    """``[N, H, W]``: the first class's raw maps of ``found`` (signed where the method is),
    brought to the size of the inputs ``x`` bilinearly when at a layer's resolution."""
    maps = found.maps[:, :1].detach().float()
    if maps.shape[-2:] != x.shape[-2:]:
        maps = upsample(maps, (x.shape[-2], x.shape[-1]))
    return maps[:, 0]


__all__ = [
    "ORDERS",
    "Randomisation",
    "RandomisationSettings",
    "data_randomisation",
    "efficient_randomisation",
    "entropy_rise",
    "fully_randomized",
    "logit_similarity",
    "map_explainer",
    "model_randomisation",
    "other_classes",
    "random_logit",
    "randomized_layers",
    "raw_map",
    "resettable_layers",
    "spearman",
]
