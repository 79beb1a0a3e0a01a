"""Sanity checks: the layer randomisation and the MPRT similarities equal quantus
0.6.0's on the same explanation function; bad input is one line."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from convlens.interpret import sanity
from tests.helpers import fashion


def test_randomised_layers_are_quantus_weights() -> None:
    from quantus.helpers.model.pytorch_model import PyTorchModel

    model, _, _ = fashion()
    wrapped = PyTorchModel(model, channel_first=True, softmax=False, device="cpu")
    theirs = wrapped.get_random_layer_generator(order="top_down", seed=42)
    before = torch.get_rng_state()
    for (name, ours), (their_name, their_model) in zip(
        sanity.randomized_layers(model, "top_down", 42), theirs, strict=True
    ):
        assert name == their_name
        for (k, a), (_, b) in zip(
            ours.state_dict().items(), their_model.state_dict().items(), strict=True
        ):
            assert torch.equal(a, b), (name, k)
    torch.set_rng_state(before)


@pytest.mark.parametrize("order", ["top_down", "bottom_up", "independent"])
def test_mprt_equals_quantus(order: str) -> None:
    import quantus

    model, x, _ = fashion()
    classes = torch.tensor([0, 3, 5, 9])
    explain = sanity.map_explainer("saliency")
    ours = sanity.model_randomisation(model, x, classes, explain, order, seed=42)

    def explain_func(
        model: nn.Module, inputs: np.ndarray, targets: np.ndarray, **_: object
    ) -> np.ndarray:
        maps = explain(model, torch.as_tensor(inputs), torch.as_tensor(targets))
        return maps[:, None].detach().numpy()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        metric = quantus.MPRT(layer_order=order, seed=42, disable_warnings=True,
                              display_progressbar=False)  # fmt: skip
        theirs = metric(model=model, x_batch=x.numpy(), y_batch=classes.numpy(), a_batch=None,
                        explain_func=explain_func, device="cpu")  # fmt: skip
    assert list(theirs)[1:] == list(ours.layers)
    for name, row in zip(ours.layers, ours.similarity, strict=True):
        assert np.allclose(row.numpy(), theirs[name], atol=1e-6), name


def test_bad_input_is_one_line() -> None:
    with pytest.raises(ValueError, match="has no layer with parameters to randomise"):
        next(sanity.randomized_layers(nn.Sequential(nn.ReLU(), nn.Flatten())))
    with pytest.raises(ValueError, match="order must be one of top_down"):
        next(sanity.randomized_layers(nn.Linear(2, 2), "sideways"))
    with pytest.raises(ValueError, match="unknown method 'blur'"):
        sanity.map_explainer("blur")
