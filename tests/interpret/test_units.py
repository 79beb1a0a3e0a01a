from __future__ import annotations

import pytest
import torch
from torch import nn

from convlens.core.hooks import hook_count
from convlens.data import images
from convlens.interpret import units


class Pick(nn.Module):
    """A 'network' whose layer 'feat' outputs a fixed 4-unit 7x7 map for a 28x28 input."""

    def __init__(self, maps: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("fixed", maps)
        self.feat = nn.Identity()
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.feat(self.fixed.expand(x.shape[0], -1, -1, -1) + 0 * x.mean())
        return self.fc(f.mean((2, 3)))


@pytest.fixture
def maps() -> torch.Tensor:
    m = torch.zeros(1, 4, 7, 7)
    m[0, 0, 2, 5] = 1.0  # one hot cell
    m[0, 1, :3, :] = 2.0  # top three rows: "sky"
    m[0, 2] = torch.arange(49.0).reshape(7, 7)  # increasing, bottom-right strongest
    m[0, 3] = 0.5  # constant
    return m


def test_upsampling_aligns_cells_with_image_blocks(maps: torch.Tensor) -> None:
    net = Pick(maps)
    um = units.unit_maps(net, torch.zeros(1, 1, 28, 28), "feat", [0, 2])
    assert um.upsampled.shape == (1, 2, 28, 28) and um.maps.shape == (1, 2, 7, 7)
    up = um.upsampled[0, 0]
    # cell (2, 5) covers pixels rows 8..11, cols 20..23; bilinear puts its peak at the centre
    peak = (up == up.max()).nonzero().tolist()
    assert peak == [[9, 21], [9, 22], [10, 21], [10, 22]]
    assert um.peaks[0].tolist() == [1.0, 48.0]
    assert hook_count(net) == 0


def test_top_units(maps: torch.Tensor) -> None:
    best = units.top_units(Pick(maps), torch.zeros(2, 1, 28, 28), "feat", 2)
    idx, score = best.units, best.scores
    assert idx.tolist() == [[2, 1], [2, 1]]
    assert score[0].tolist() == pytest.approx([24.0, 2.0 * 21 / 49])  # means of units 2, 1
    idx = units.top_units(Pick(maps), torch.zeros(1, 1, 28, 28), "feat", 1, by="max").units
    assert idx.tolist() == [[2]]
    with pytest.raises(ValueError, match="`top` must be in 1..4"):
        units.top_units(Pick(maps), torch.zeros(1, 1, 28, 28), "feat", 5)


def test_box_mask_pixel_centres() -> None:
    m = images.box_mask((1, 0, 3, 2), (4, 4))
    assert m.int().tolist() == [[0, 1, 1, 0], [0, 1, 1, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
    with pytest.raises(ValueError, match="empty"):
        images.box_mask((3, 0, 1, 2), (4, 4))


def test_region_iou_by_hand(maps: torch.Tensor) -> None:
    net = Pick(maps)
    sky = images.box_mask((0, 0, 28, 12), (28, 28))  # top 12 rows = 336 pixels
    match = units.match_region(net, torch.zeros(1, 1, 28, 28), "feat", sky, quantile=0.5)
    assert match.units[0].item() == 1
    # unit 1 upsampled is 2 on rows 0..9, then falls to 0 by row 14; its median is 0, so
    # "on" = rows where the value is > 0: rows 0..13 (392 pixels) -> IoU = 336 / 392
    on = match.masks[0]
    assert on.sum().item() == 14 * 28
    assert match.iou[0].item() == pytest.approx(336 / 392)
    # the constant unit is never "on" (nothing exceeds its own quantile): IoU 0
    assert match.iou[match.units.tolist().index(3)].item() == 0.0


def test_unit_errors(maps: torch.Tensor) -> None:
    net = Pick(maps)
    x = torch.zeros(1, 1, 28, 28)
    with pytest.raises(ValueError, match=r"units \[4\] out of range: layer 'feat' has 4 units"):
        units.unit_maps(net, x, "feat", [1, 4])
    with pytest.raises(ValueError, match="not \\[N, C, h, w\\] feature maps"):
        units.feature_maps(net, x, "fc")
    with pytest.raises(ValueError, match="region mask is \\(7, 7\\)"):
        units.match_region(net, x, "feat", torch.ones(7, 7, dtype=torch.bool))
    with pytest.raises(ValueError, match="quantile must be in"):
        units.match_region(net, x, "feat", torch.ones(28, 28, dtype=torch.bool), quantile=1.0)
    assert hook_count(net) == 0
