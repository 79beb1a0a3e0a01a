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


def test_imputation_and_road_equal_quantus() -> None:
    """The count rule: quantus's imputation of the top pixels (noise in their order, from
    numpy's seeded state), and its ROAD accuracies on the same maps."""
    import warnings

    import quantus
    from quantus.functions.perturb_func import noisy_linear_imputation

    g = torch.Generator().manual_seed(3)
    x = torch.rand(2, 3, 12, 9, generator=g)
    maps = torch.rand(2, 12, 9, generator=g)
    ranked = road.ranking(maps, "morf")
    keep = road.removal_mask(maps, 0.3, "morf")
    ours = road.impute(x, keep, 0.01, np.random.RandomState(4), ranking=ranked)
    np.random.seed(4)
    for i in range(2):
        top = ranked[i, : int(12 * 9 * 0.3)].numpy()
        theirs = noisy_linear_imputation(x[i].double().numpy(), top, noise=0.01)
        assert np.allclose(ours[i].double().numpy(), theirs, atol=1e-6)

    model, x, _ = fashion()
    x = torch.cat([x, x.flip(0), x.roll(3, 2)])  # twelve images
    classes = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1])
    maps = torch.rand(12, 28, 28, generator=g)
    percentages = [10, 30, 50, 70, 90]
    settings = road.RoadSettings(fractions=tuple(p / 100 for p in percentages), seed=11)
    ours_road = road.road_curves(model.eval(), x, maps, classes, "morf", settings)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        metric = quantus.ROAD(percentages=percentages, noise=0.01, disable_warnings=True)
        np.random.seed(11)
        theirs_road = metric(model=model, x_batch=x.numpy(), y_batch=classes.numpy(),
                             a_batch=maps[:, None].numpy(), device="cpu")  # fmt: skip
    accuracy = ours_road.correct.double().mean(0).tolist()
    assert np.allclose(accuracy, [theirs_road[p] for p in percentages], atol=1e-6)
    assert len(set(accuracy)) > 1  # the curve moves


def test_removal_masks_follow_the_percentile_rule() -> None:
    maps = torch.rand(2, 10, 10, generator=torch.Generator().manual_seed(1))
    for fraction in (0.1, 0.5, 0.9):
        assert int((~road.removal_mask(maps, fraction)).sum()) == 2 * int(100 * fraction)
        morf = road.removal_mask(maps, fraction, "morf", "percentile")
        lerf = road.removal_mask(maps, fraction, "lerf", "percentile")
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
    settings = road.RoadSettings(fractions=(0.2, 0.8), rule="percentile")
    curves = road.road_curves(model.eval(), x, maps, classes, "morf", settings).probability
    assert curves.shape == (4, 2) and bool(((curves >= 0) & (curves <= 1)).all())
    keep = road.removal_mask(maps, 0.2, "morf", "percentile")
    imputed = road.impute(x, keep, 0.01, torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = model(imputed).softmax(1)[torch.arange(4), classes]
    assert torch.allclose(curves[:, 0], want, atol=1e-6)
    # a ReLU'd map's ties: the count rule removes the fraction asked, whatever the ties
    flat = torch.zeros(4, 28, 28)
    flat[:, :5] = 1.0
    assert int((~road.removal_mask(flat, 0.5)).sum()) == 4 * 392
    with pytest.raises(ValueError, match=r"removal fraction must be in \(0, 1\), got 0"):
        road.road_curves(model, x, maps, classes, "morf", road.RoadSettings(fractions=(0.5, 0)))
    with pytest.raises(ValueError, match="rule must be one of count, percentile"):
        road.removal_mask(maps, 0.5, "morf", "median")
    with pytest.raises(ValueError, match=r"removal fraction must be in \(0, 1\), got 1.0"):
        road.removal_mask(maps, 1.0)
    with pytest.raises(ValueError, match="order must be one of morf, lerf"):
        road.removal_mask(maps, 0.5, "middle")
    with pytest.raises(ValueError, match="no pixel kept"):
        road.impute(x, torch.zeros(4, 28, 28, dtype=torch.bool))
