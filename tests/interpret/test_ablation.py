from __future__ import annotations

import itertools
import re

import pytest
import torch
import torchvision

from convlens.core.hooks import capture, hook_count
from convlens.interpret import ablation
from convlens.interpret.heads import NotGapHeadError, find_gap_head
from tests.helpers import tiny_gap_model


def closed_form_logits(model: torch.nn.Module, x: torch.Tensor, units: list[int]) -> torch.Tensor:
    head = find_gap_head(model, x)
    with torch.no_grad():
        a = model.features(x).mean((2, 3))  # [N, C]
        return model(x) - a[:, units] @ head.weight[:, units].T


def test_closed_form_equals_a_real_forward_ablation() -> None:
    model = tiny_gap_model().eval()
    x = torch.randn(3, 1, 28, 28)
    for units in ([0], [1, 4], [0, 2, 3, 5]):
        real = ablation.ablate(model, x, "features", units)
        torch.testing.assert_close(
            real.logits_after, closed_form_logits(model, x, units), atol=1e-5, rtol=1e-5
        )


def test_activation_ablation_zeroes_the_units_and_cleans_up() -> None:
    model = tiny_gap_model().train()
    x = torch.randn(2, 1, 28, 28)
    with ablation.ablated(model, "features.0", [1, 3]), capture(model, "features.0") as s:
        model.eval()(x)
    assert torch.all(s["features.0"][:, [1, 3]] == 0) and torch.any(s["features.0"][:, 0] != 0)
    model.train()
    result = ablation.ablate(model, x, "features.0", [1, 3])
    assert result.maps.shape == (2, 2, 14, 14) and torch.any(result.maps != 0)
    assert model.training and hook_count(model) == 0
    with pytest.raises(ValueError, match=r"units \[9\] out of range: layer 'features.0' has 4"):
        ablation.ablate(model, x, "features.0", [1, 9])
    with pytest.raises(ValueError, match="unknown ablation mode"):
        ablation.ablate(model, x, "features.0", [1], mode="kernels")
    assert hook_count(model) == 0


def test_weights_mode_restores_weights_even_on_error() -> None:
    model = tiny_gap_model()
    conv = model.features[1][0].conv
    saved = conv.weight.detach().clone()
    with ablation.ablated(model, "features.1", [0, 2], mode="weights") as name:
        assert name == "features.1.0.conv"
        assert torch.all(conv.weight[[0, 2]] == 0)
    assert torch.equal(conv.weight, saved)
    with (
        pytest.raises(RuntimeError, match="boom"),
        ablation.ablated(model, "features.1.0.conv", [1], mode="weights"),
    ):
        raise RuntimeError("boom")
    assert torch.equal(conv.weight, saved)
    with pytest.raises(ValueError, match="contains no convolution"):
        ablation.ablate(model, torch.randn(1, 1, 28, 28), "pool", [0], mode="weights")


def test_weights_mode_differs_from_activation_mode_through_batchnorm() -> None:
    model = tiny_gap_model().eval()
    x = torch.randn(2, 1, 28, 28)
    # Zeroed kernels give an exactly-zero conv output, so they equal masking the conv...
    w = ablation.ablate(model, x, "features.1", [0, 2], mode="weights")
    keep = torch.tensor([False, True, False, True, True, True])
    with torch.no_grad(), ablation.masked_channels(model, "features.1.0.conv", keep):
        masked = model(x)
    torch.testing.assert_close(w.logits_after, masked)
    # ...but BatchNorm's shift survives, unlike zeroing the block's output.
    a = ablation.ablate(model, x, "features.1", [0, 2], mode="activation")
    assert not torch.allclose(w.logits_after, a.logits_after)


def test_units_by_fc_weight() -> None:
    model = tiny_gap_model()
    head = find_gap_head(model, torch.randn(1, 1, 28, 28))
    top = ablation.units_by_fc_weight(head, 2, 3)
    assert top == model.fc.weight[2].argsort(descending=True)[:3].tolist()
    with pytest.raises(ValueError, match="`top` must be in 1..6"):
        ablation.units_by_fc_weight(head, 2, 7)


def flippable_images(model: torch.nn.Module, n: int = 40) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 1, 1, 28, 28, generator=g)


def test_optimal_fewest_units_is_the_true_minimum() -> None:
    model = tiny_gap_model().eval()
    model.fc.bias.data.mul_(0.01)  # a large bias alone would keep most classes on top
    checked = 0
    for x in flippable_images(model):
        r = ablation.fewest_units(model, x)
        assert r.method == "closed form" and r.order == "optimal" and r.layer == "features"
        if not r.found:
            continue
        checked += 1
        assert r.new_class != r.original_class and r.forward_passes == 1
        assert r.predicted_logits is not None
        torch.testing.assert_close(r.predicted_logits, r.logits_after, atol=1e-5, rtol=1e-5)
        # No smaller set of units flips the top-1 class (brute force over 2^6 subsets).
        for size in range(len(r.units)):
            for subset in itertools.combinations(range(6), size):
                if not subset:
                    continue
                logits = closed_form_logits(model, x, list(subset))
                assert int(logits.argmax()) == r.original_class
        # The fixed orders are never better than the optimum.
        for order in ("contribution", "weight", "greedy"):
            other = ablation.fewest_units(model, x, order=order)
            assert not other.found or len(other.units) >= len(r.units)
    assert checked >= 5


def test_forward_search_on_an_inner_layer() -> None:
    model = tiny_gap_model()
    x = flippable_images(model)[0]
    r = ablation.fewest_units(model, x, layer="features.0", batch_size=3)
    assert r.method == "forward search" and r.order == "greedy"
    assert r.predicted_logits is None and r.forward_passes > len(r.units)
    real = ablation.ablate(model, x, "features.0", list(r.units))
    assert torch.equal(real.logits_after[0], r.logits_after)
    assert r.found == (int(real.logits_after.argmax()) != r.original_class)
    w = ablation.fewest_units(model, x, layer="features.0", mode="weights")
    real_w = ablation.ablate(model, x, "features.0", list(w.units), mode="weights")
    torch.testing.assert_close(real_w.logits_after[0], w.logits_after)
    assert hook_count(model) == 0


def test_fewest_units_errors() -> None:
    model = tiny_gap_model()
    x = torch.randn(1, 1, 28, 28)
    with pytest.raises(ValueError, match=r"greedy search \(`order` greedy\)"):
        ablation.fewest_units(model, x, layer="features.0", order="contribution")
    with pytest.raises(ValueError, match=r"greedy search \(`order` greedy\)"):
        ablation.fewest_units(model, x, order="optimal", mode="weights")
    with pytest.raises(ValueError, match="one image"):
        ablation.fewest_units(model, torch.randn(2, 1, 28, 28))
    vgg = torchvision.models.vgg11(num_classes=3)
    with pytest.raises(NotGapHeadError):
        ablation.fewest_units(vgg, torch.randn(1, 3, 32, 32))


class ConstantFeatures(torch.nn.Module):
    """Feature maps equal to ``a_k`` everywhere, then GAP and a hand-set linear layer."""

    def __init__(self, a: list[float], weight: list[list[float]], bias: list[float]) -> None:
        super().__init__()
        self.features = torch.nn.Conv2d(1, len(a), 1)
        self.fc = torch.nn.Linear(len(a), len(bias))
        with torch.no_grad():
            self.features.weight.zero_()
            self.features.bias.copy_(torch.tensor(a))
            self.fc.weight.copy_(torch.tensor(weight))
            self.fc.bias.copy_(torch.tensor(bias))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean((2, 3)))


def test_optimal_order_beats_the_contribution_order_when_it_should() -> None:
    # logits: class 0 = 3+1+1 = 5, class 1 = 2.9+0.2 = 3.1. Unit 0 contributes most to
    # class 0 but as much to class 1, so removing it barely helps; units 1 and 2 do.
    model = ConstantFeatures([1.0, 1.0, 1.0], [[3.0, 1.0, 1.0], [2.9, 0.0, 0.0]], [0.0, 0.2])
    x = torch.zeros(1, 1, 4, 4)
    best = ablation.fewest_units(model, x)
    assert sorted(best.units) == [1, 2] and best.new_class == 1
    contribution = ablation.fewest_units(model, x, order="contribution")
    assert contribution.units == (0, 1, 2) and contribution.new_class == 1
    assert ablation.fewest_units(model, x, order="weight").units == (0, 1, 2)


@pytest.mark.parametrize(
    ("arch", "layer"),
    [("resnet18", "layer3.0"), ("densenet121", "features.denseblock3.denselayer5")],
)
def test_the_shared_prefix_gives_the_logits_of_a_whole_batch(arch: str, layer: str) -> None:
    """The greedy search runs the network up to the layer once and the rest on a batch of
    masked copies; where the forward cannot (densenet's concatenations) it runs the whole
    batch. Either way the logits are those of the masked images run one by one."""
    torch.manual_seed(0)
    model = getattr(torchvision.models, arch)(weights=None).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        c = int(model(x).argmax())
        search = ablation._Greedy(model, x, layer, "activation", c, 8, None)
        channels = hooks_channels(model, x, layer)
        g = torch.Generator().manual_seed(1)
        masks = torch.rand(5, channels, generator=g) > 0.3
        got = search.masked_logits(masks)
        for mask, row in zip(masks, got, strict=True):
            with ablation.masked_channels(model, layer, mask):
                torch.testing.assert_close(row, model(x)[0], atol=1e-4, rtol=1e-4)
    assert search.shared_prefix == (arch == "resnet18")
    assert search.passes == 5 and hook_count(model) == 0


def hooks_channels(model: torch.nn.Module, x: torch.Tensor, layer: str) -> int:
    with capture(model, layer) as store:
        model(x)
    return store[layer].shape[1]


def test_the_greedy_search_stops_at_its_budget_with_the_best_so_far() -> None:
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    x = torch.randn(1, 3, 64, 64)
    full = ablation.fewest_units(model, x, layer="layer2", shortlist=None, budget=None)
    assert full.stopped is None and full.found and len(full.units) >= 1
    # the shortlist keeps the first step's pick when it is among the shortlisted units
    short = ablation.fewest_units(model, x, layer="layer2", budget=None)
    assert short.found and short.forward_passes < full.forward_passes
    cut = ablation.fewest_units(model, x, layer="layer2", budget=1e-9)
    assert cut.stopped == "budget" and not cut.found and cut.units == ()
    assert torch.equal(cut.logits_after, cut.logits_before)
    with pytest.raises(ValueError, match="`budget` must be a positive"):
        ablation.fewest_units(model, x, layer="layer2", budget=0)
    with pytest.raises(ValueError, match="`shortlist` must be at least 1"):
        ablation.fewest_units(model, x, layer="layer2", shortlist=0)


def test_a_search_cut_by_its_budget_says_so() -> None:
    from convlens.render import unit_figures

    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    cut = ablation.fewest_units(model, torch.randn(1, 3, 64, 64), layer="layer2", budget=1e-9)
    text = unit_figures.describe_fewest_units(cut, [f"c{i}" for i in range(1000)])
    # the seconds depend on the machine's load: only the wording is checked
    assert re.search(r"out of time after \d+ s; these are the best units so far", text)


def test_search_settings_as_an_object_or_as_keywords() -> None:
    """``fewest_units`` takes its search as one SearchSettings or as keywords."""
    model = ConstantFeatures([1.0, 1.0, 1.0], [[3.0, 1.0, 1.0], [2.9, 0.0, 0.0]], [0.0, 0.2])
    x = torch.zeros(1, 1, 4, 4)
    by_object = ablation.fewest_units(model, x, None, ablation.SearchSettings(order="weight"))
    by_keyword = ablation.fewest_units(model, x, order="weight")
    assert by_object.units == by_keyword.units == (0, 1, 2) and by_object.order == "weight"
    with pytest.raises(TypeError, match="unexpected keyword 'budgets'.*order, mode"):
        ablation.fewest_units(model, x, budgets=3)
