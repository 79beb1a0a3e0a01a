"""Device discipline without a GPU: every public analysis runs with torch's default
device set to ``meta`` while the model and the inputs are explicitly on the CPU, so that
a tensor made without naming its device (which on a GPU would land on the CPU, or the
other way round) fails here."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch

from convlens.data.images import Preprocessing
from convlens.data.sources import TensorSource
from convlens.inference import evaluate, predict_logits
from convlens.interpret import ablation, faithfulness, filters, road, sanity, units
from convlens.interpret.concepts import discover, tcav
from convlens.interpret.dissect import dissect
from convlens.interpret.maps import pixel, registry
from convlens.interpret.objectives import channel, class_logit, diversity
from convlens.interpret.visualize import VisualizeSettings, visualize
from tests.helpers import tiny_gap_model

GREY = Preprocessing(channels=1, size=28, mean=(0.5,), std=(0.5,))
LABELS = torch.tensor([0, 1, 2])  # made at import, on the CPU


@contextlib.contextmanager
def on_meta() -> Iterator[None]:
    """torch's default device set to ``meta`` inside the block."""
    torch.set_default_device("meta")
    try:
        yield
    finally:
        torch.set_default_device(None)


def _cases() -> dict[str, Callable[[torch.nn.Module, torch.Tensor], Any]]:
    few = VisualizeSettings(steps=2, images=2)
    cases: dict[str, Callable[[torch.nn.Module, torch.Tensor], Any]] = {
        "predict_logits": lambda m, x: predict_logits(m, x.mul(255).byte(), tta=True),
        "evaluate": lambda m, x: evaluate(m, x.mul(255).byte(), LABELS),
        "filter_tiles": lambda m, x: filters.filter_tiles(m, "features.0.0.conv"),
        "feature_maps": lambda m, x: units.feature_maps(m, x, "features"),
        "unit_maps": lambda m, x: units.unit_maps(m, x, "features", [0, 1]),
        "top_units": lambda m, x: units.top_units(m, x, "features", 2),
        "match_region": lambda m, x: units.match_region(
            m, x[:1], "features", torch.ones(28, 28, dtype=torch.bool, device="cpu")
        ),
        "ablate": lambda m, x: ablation.ablate(m, x, "features", [0]),
        "top_weighted_units": lambda m, x: ablation.top_weighted_units(m, x[:1], 2),
        "fewest_units closed form": lambda m, x: ablation.fewest_units(m, x[:1]),
        "fewest_units greedy": lambda m, x: ablation.fewest_units(
            m, x[:1], "features.0", max_units=2
        ),
        "faithfulness": lambda m, x: faithfulness.faithfulness(
            m, x, registry.class_maps(m, x, top=1).upsampled[:, 0], steps=4
        ),
        "score_methods": lambda m, x: faithfulness.score_methods(
            m, [x], ["gradcam", "saliency"], steps=4, progress=False
        ),
        "infidelity": lambda m, x: faithfulness.infidelity(
            m, x, pixel.attribute(m, x, "saliency").attributions, LABELS
        ),
        "sensitivity_max": lambda m, x: faithfulness.sensitivity_max(
            lambda xs, c: pixel.attribute(m, xs, "saliency", c).attributions,
            x,
            LABELS,
            samples=2,
        ),
        "dissect": lambda m, x: dissect(
            m,
            TensorSource(x, LABELS % 2, ("a", "b")),
            "features",
            top=2,
            progress=False,
        ),
        "visualize": lambda m, x: visualize(
            m, channel("features", [0, 1]) - 0.05 * diversity("features"), GREY, few
        ),
        "visualize class": lambda m, x: visualize(m, class_logit([2]), GREY, few),
    }
    for name in registry.names():
        # Refine-CAM's default layers need a finer resolution than the tiny model has
        options = {"layers": ("features.0", "features")} if name == "refinecam" else None
        cases[f"class_maps {name}"] = lambda m, x, n=name, o=options: registry.class_maps(
            m, x, top=2, method=n, options=o
        )
    cases["tcav"] = lambda m, x: tcav.tcav(
        m, {0: x.repeat(4, 1, 1, 1)}, {"c": x.repeat(4, 1, 1, 1)},
        [x.repeat(4, 1, 1, 1).flip(0), x.repeat(4, 1, 1, 1)], ["features"], "logistic",
    )  # fmt: skip
    cases["concepts"] = lambda m, x: discover.concepts(
        m, x.repeat(4, 1, 1, 1), "features", torch.arange(12, device="cpu") % 2, [0, 1],
        discover.ConceptSettings(k=2, top=2, designs=4),
    )  # fmt: skip
    cases["concepts (patches)"] = lambda m, x: discover.concepts(
        m, x.repeat(4, 1, 1, 1), "features", torch.arange(12, device="cpu") % 2, None,
        discover.ConceptSettings(k=2, top=2, designs=4, patches=14),
    )  # fmt: skip
    cases["model randomisation"] = lambda m, x: sanity.model_randomisation(
        m, x, torch.arange(3, device="cpu"), sanity.map_explainer("gradcam")
    )
    cases["road"] = lambda m, x: road.road_curves(
        m, x, torch.rand(3, 28, 28, device="cpu"), torch.arange(3, device="cpu"), "morf",
        road.RoadSettings(fractions=(0.5,)),
    )  # fmt: skip
    cases["deletion_curve"] = lambda m, x: faithfulness.deletion_curve(
        m, x, torch.rand(3, 28, 28, device="cpu"), LABELS, steps=4
    )
    cases["efficient randomisation"] = lambda m, x: sanity.efficient_randomisation(
        m, x, torch.arange(3, device="cpu"), sanity.map_explainer("saliency")
    )
    cases["random logit"] = lambda m, x: sanity.random_logit(
        m, x, torch.arange(3, device="cpu"), sanity.map_explainer("gradcam")
    )
    return cases


CASES = _cases()


@pytest.mark.parametrize("analysis", list(CASES))
def test_every_public_analysis_names_the_device_of_what_it_makes(analysis: str) -> None:
    model = tiny_gap_model().eval()
    x = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    with on_meta():
        CASES[analysis](model, x)


def test_the_check_catches_a_tensor_made_on_the_default_device() -> None:
    """The check itself: a tensor made without a device, mixed with one on the CPU."""
    x = torch.ones(3)
    with on_meta(), pytest.raises((RuntimeError, NotImplementedError)):
        (x * torch.arange(3)).sum().item()


def test_an_answer_keeps_its_shape_when_moved() -> None:
    """``to_device`` moves the tensors of a dataclass, tuple, list or dict and leaves the
    rest; ``on_model_device`` moves nothing when the inputs are where the model is."""
    from convlens.core.device import on_model_device, to_device
    from convlens.interpret.units import TopUnits

    answer = units.top_units(tiny_gap_model().eval(), torch.randn(2, 1, 28, 28), "features", 2)
    moved = to_device({"top": answer, "pair": (answer.units, 3)}, torch.device("cpu"))
    assert isinstance(moved["top"], TopUnits) and moved["pair"][1] == 3
    assert torch.equal(moved["top"].units, answer.units)

    @on_model_device
    def same(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        return x

    x = torch.randn(2)
    assert same(tiny_gap_model(), x) is x


# public functions of (model, inputs) that place the inputs themselves, and why
PLACES_ITSELF = {
    "convlens.inference.predict_logits": "moves each batch to the model's device",
    "convlens.inference.get_prediction": "predict_logits",
    "convlens.inference.evaluate": "predict_logits",
    "convlens.interpret.faithfulness.score_methods": "each batch through class_maps and "
    "faithfulness",
    "convlens.interpret.heads.find_gap_head": "moves its probe to the model's device",
    "convlens.interpret.heads.class_map_head": "moves its probe to the model's device",
    "convlens.interpret.maps.cam.masked_logits": "a member's step: its inputs are already there",
    "convlens.interpret.maps.cam.graph_forward": "a member's step: its inputs are already there",
    "convlens.interpret.maps.registry.class_maps": "through the method's explainer",
    "convlens.interpret.maps.registry.every_method": "through each method's explainer",
    "convlens.interpret.concepts.tcav.layer_outputs": "moves each batch to the model's device",
    "convlens.interpret.concepts.tcav.layer_gradients": "moves each batch to the model's device",
    "convlens.interpret.concepts.tcav.check_classes": "moves its probe to the model's device",
    "convlens.interpret.concepts.tcav.tcav": "through layer_outputs and layer_gradients",
    "convlens.interpret.concepts.discover.layer_maps": "moves each batch to the model's device",
    "convlens.interpret.concepts.discover.concepts": "through layer_maps and the model's passes",
    "convlens.interpret.concepts.discover.concept_maps": "through layer_maps",
    "convlens.interpret.road.road_curves": "moves each imputed batch to the model's device",
    "convlens.interpret.sanity.model_randomisation": "through its explainer (class_maps)",
}


def test_every_public_function_of_a_model_and_inputs_runs_where_the_model_is() -> None:
    """A public function that takes ``(model, inputs)`` either runs under
    :func:`~convlens.core.device.on_model_device` or is listed above with the reason it
    places its inputs itself. (``feature_maps`` and ``activations`` were neither, and
    the explorer's unit maps and ``convlens report`` failed on a GPU.)"""
    import importlib
    import inspect
    import pkgutil

    import convlens

    unplaced = []
    for info in pkgutil.walk_packages(convlens.__path__, "convlens."):
        if any(part in info.name for part in (".cli", ".serve", ".sweep", ".training")):
            continue
        module = importlib.import_module(info.name)
        for name in getattr(module, "__all__", []):
            fn = getattr(module, name, None)
            if not inspect.isfunction(fn) or fn.__module__ != info.name:
                continue
            params = list(inspect.signature(fn).parameters)
            takes_inputs = params[1:2] in (["x"], ["images"], ["inputs"], ["batches"])
            if params[:1] == ["model"] and takes_inputs:
                placed = getattr(fn, "on_model_device", False)
                if not placed and f"{info.name}.{name}" not in PLACES_ITSELF:
                    unplaced.append(f"{info.name}.{name}")
    assert not unplaced, unplaced


def test_passes_hold_twice_the_images_under_a_16_bit_autocast() -> None:
    from convlens.core.device import pass_batch

    cpu, values = torch.device("cpu"), 3 * 224 * 224
    assert pass_batch(values, cpu) == 3
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert pass_batch(values, cpu) == 6
        assert pass_batch(values, cpu, batch_size=5) == 5  # a given size is kept
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=False):
        assert pass_batch(values, cpu) == 3
    assert pass_batch(28 * 28, cpu) == 256  # small images: the cap
    assert pass_batch(values, torch.device("meta")) == 256  # not the CPU: no cap
