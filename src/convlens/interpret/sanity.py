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
similarity is the Spearman rank correlation of the absolute maps (quantus's default
``abs=True``; signed with ``signed=True``).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from scipy import stats
from torch import nn

from convlens.core.hooks import eval_mode, get_layer

ORDERS = ("top_down", "bottom_up", "independent")


def randomized_layers(
    model: nn.Module, order: str = "top_down", seed: int = 42
) -> Iterator[tuple[str, nn.Module]]:
    """Yield ``(layer, model)``: a copy of ``model`` with one more layer re-initialised
    (``independent``: that layer alone), in ``order`` (see the module doc). The copy is
    the same object each time: use it before asking for the next.

    Raises:
        ValueError: an unknown order, or a model with no layer to re-initialise.
    """
    if order not in ORDERS:
        raise ValueError(f"order must be one of {', '.join(ORDERS)}, got {order!r}")
    twin = copy.deepcopy(model)
    names = [name for name, m in twin.named_modules() if hasattr(m, "reset_parameters")]
    if not names:
        raise ValueError(f"{type(model).__name__} has no layer with parameters to randomise")
    original = copy.deepcopy(model.state_dict())
    for name in names[::-1] if order == "top_down" else names:
        if order == "independent":
            twin.load_state_dict(original)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + 1)
            get_layer(twin, name).reset_parameters()  # type: ignore[operator]
        yield name, twin


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``[N]``: the Spearman rank correlation of each row of ``a`` with that of ``b``
    (``[N, ...]``, flattened; ties get their average rank, as scipy's)."""
    ra = stats.rankdata(a.detach().cpu().double().flatten(1).numpy(), axis=1)
    rb = stats.rankdata(b.detach().cpu().double().flatten(1).numpy(), axis=1)
    ra -= ra.mean(1, keepdims=True)
    rb -= rb.mean(1, keepdims=True)
    denominator = np.sqrt((ra * ra).sum(1) * (rb * rb).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return torch.from_numpy((ra * rb).sum(1) / denominator).float()


@dataclass(frozen=True)
class Randomisation:
    """How much each image's map stays the same as the network's layers are randomised."""

    method: str
    order: str
    layers: tuple[str, ...]  # in the order randomised
    similarity: torch.Tensor  # [layers, N] Spearman with the trained network's maps

    def last(self) -> torch.Tensor:
        """``[N]``: the similarity once every layer is randomised (cascading orders)."""
        return self.similarity[-1]


def model_randomisation(
    model: nn.Module,
    x: torch.Tensor,
    classes: torch.Tensor,
    explain: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor],
    order: str = "top_down",
    seed: int = 42,
    signed: bool = False,
    method: str = "",
) -> Randomisation:
    """MPRT: ``explain(model, x, classes)`` (``[N, ...]`` maps) of the trained ``model``
    against the same for each randomised copy (:func:`randomized_layers`).

    Raises:
        ValueError: an unknown order, or a model with no layer to re-initialise.
    """
    with eval_mode(model):
        reference = explain(model, x, classes)
    names, rows = [], []
    for name, twin in randomized_layers(model, order, seed):
        twin.eval()  # a copy: its mode is its own
        maps = explain(twin, x, classes)
        a, b = (reference, maps) if signed else (reference.abs(), maps.abs())
        names.append(name)
        rows.append(spearman(a, b))
    return Randomisation(method, order, tuple(names), torch.stack(rows))


def map_explainer(
    method: str, layer: str | None = None, options: dict[str, object] | None = None
) -> Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]:
    """``explain(model, x, classes)`` for a map method of either family (a registry
    name): each image's raw map for its class, ``[N, h, w]``.

    Raises:
        ValueError: not a map method.
    """
    from convlens.interpret.maps import registry

    registry.method(method)  # checks the name

    def explain(model: nn.Module, x: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        found = registry.class_maps(model, x, method=method, layer=layer,
                                    classes=classes[:, None], options=options)  # fmt: skip
        return found.maps[:, 0]

    return explain


__all__ = [
    "ORDERS",
    "Randomisation",
    "map_explainer",
    "model_randomisation",
    "randomized_layers",
    "spearman",
]
