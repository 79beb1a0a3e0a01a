"""ROAD: the noisy linear imputation equals pytorch-grad-cam's ``NoisyLinearImputer``
(same noise from the same seed), the removal masks are its percentile rule, and the
curves read the model on the imputed images."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pytorch_grad_cam.metrics.road import NoisyLinearImputer

from convlens.interpret import road
from tests.helpers import fashion


def test_imputation_equals_pytorch_grad_cams() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 3, 20, 17, generator=g)
    keep = torch.rand(3, 20, 17, generator=g) > 0.6  # most pixels removed, edges included
    ours = road.impute(x, keep, noise=0.0)
    for i in range(3):
        theirs = NoisyLinearImputer(noise=0.0)(x[i], keep[i].float())
        assert torch.allclose(ours[i], theirs, atol=1e-6)
        assert torch.equal(ours[i][:, keep[i]], x[i][:, keep[i]])
    # with noise: the same draws from the same seed
    torch.manual_seed(5)
    theirs = NoisyLinearImputer(noise=0.01)(x[0], keep[0].float())
    ours = road.impute(x[:1], keep[:1], noise=0.01, generator=torch.Generator().manual_seed(5))
    assert torch.allclose(ours[0], theirs, atol=1e-6)


def test_removal_masks_follow_the_percentile_rule() -> None:
    maps = torch.rand(2, 10, 10, generator=torch.Generator().manual_seed(1))
    for fraction in (0.1, 0.5, 0.9):
        morf = road.removal_mask(maps, fraction, "morf")
        lerf = road.removal_mask(maps, fraction, "lerf")
        for i in range(2):
            m = maps[i].numpy()
            assert np.array_equal(morf[i].numpy(), m < np.percentile(m, 100 * (1 - fraction)))
            assert np.array_equal(
                lerf[i].numpy(), (1 - m) < np.percentile(1 - m, 100 * (1 - fraction))
            )
        assert abs(float((~morf).float().mean()) - fraction) < 0.02


def test_curves_and_bad_input() -> None:
    model, x, _ = fashion()
    maps = torch.rand(4, 28, 28, generator=torch.Generator().manual_seed(2))
    classes = torch.tensor([0, 1, 2, 3])
    curves = road.road_curves(model.eval(), x, maps, classes, (0.2, 0.8), "morf")
    assert curves.shape == (4, 2) and bool(((curves >= 0) & (curves <= 1)).all())
    keep = road.removal_mask(maps, 0.2, "morf")
    imputed = road.impute(x, keep, 0.01, torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = model(imputed).softmax(1)[torch.arange(4), classes]
    assert torch.allclose(curves[:, 0], want, atol=1e-6)
    with pytest.raises(ValueError, match=r"removal fraction must be in \(0, 1\), got 1.0"):
        road.removal_mask(maps, 1.0)
    with pytest.raises(ValueError, match="order must be one of morf, lerf"):
        road.removal_mask(maps, 0.5, "middle")
    with pytest.raises(ValueError, match="no pixel kept"):
        road.impute(x, torch.zeros(4, 28, 28, dtype=torch.bool))
