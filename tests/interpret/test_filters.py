from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision.models import resnet18

from convlens.core.hooks import hook_count
from convlens.interpret import filters
from convlens.render import figure, unit_figures


def test_normalize_per_filter_formula() -> None:
    t = torch.tensor([[[[-2.0, 0.0], [2.0, 6.0]]], [[[1.0, 1.0], [1.0, 1.0]]]])
    out = filters.normalize_tensor(t, "filter")
    assert torch.allclose(out[0].flatten(), torch.tensor([0.0, 0.25, 0.5, 1.0]))
    assert torch.equal(out[1], torch.full((1, 2, 2), 0.5)), "constant filter -> 0.5"
    layer = filters.normalize_tensor(t, "layer")
    assert torch.allclose(layer[1], torch.full((1, 2, 2), 3 / 8))
    assert t[0, 0, 0, 0] == -2.0, "input left unchanged"


def test_normalize_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="per must be 'filter' or 'layer'"):
        filters.normalize_tensor(torch.ones(2, 2), "channel")
    with pytest.raises(ValueError, match="empty"):
        filters.normalize_tensor(torch.ones(0))


def test_first_layer_is_rgb_and_deeper_is_per_channel(tmp_path: Path) -> None:
    net = resnet18()
    first = filters.filter_tiles(net, "conv1", max_filters=16)
    assert first.rgb and first.tiles.shape == (16, 3, 7, 7)
    assert first.tiles.min() >= 0 and first.tiles.max() <= 1
    deep = filters.filter_tiles(net, "layer1.0.conv1", filters=[0, 5], in_channels=[1, 2, 3])
    assert not deep.rgb and deep.tiles.shape == (2, 3, 3, 3)
    w = net.layer1[0].conv1.weight.detach()
    assert torch.allclose(deep.tiles[1], filters.normalize_tensor(w[[5]][:, [1, 2, 3]])[0])
    figure.save_figure(unit_figures.draw_filters(first), tmp_path / "f.png")
    figure.save_figure(unit_figures.draw_filters(deep), tmp_path / "d.svg")
    assert (tmp_path / "f.png").read_bytes()[:4] == b"\x89PNG"
    assert b"<svg" in (tmp_path / "d.svg").read_bytes()[:400]
    assert hook_count(net) == 0


def test_filter_errors() -> None:
    net = resnet18()
    with pytest.raises(ValueError, match="'bn1' is a BatchNorm2d, not a Conv2d"):
        filters.filter_tiles(net, "bn1")
    with pytest.raises(ValueError, match="filters \\[64\\] out of range"):
        filters.filter_tiles(net, "conv1", filters=[64])
    with pytest.raises(ValueError, match="colour tiles need 3"):
        filters.filter_tiles(net, "layer1.0.conv1", rgb=True)
    single = nn.Sequential(nn.Conv2d(1, 4, 3))
    assert not filters.filter_tiles(single, "0").rgb
