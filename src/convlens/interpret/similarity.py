"""How alike two maps are, image by image: the measures of the sanity checks (Adebayo et
al., NeurIPS 2018) and the complexity of eMPRT (Hedström et al., 2024).

Every measure takes two ``[N, h, w]`` batches and gives ``[N]``, one value per pair:

- ``spearman_abs`` and ``spearman``: the Spearman rank correlation of the absolute and of
  the signed maps (ties get their average rank, as scipy's);
- ``ssim``: the structural similarity of the two maps as images (scikit-image's
  ``structural_similarity`` with its defaults: a uniform 7 x 7 window, sample covariance,
  K1 = 0.01, K2 = 0.03), the data range being that of the pair together (quantus's
  choice);
- ``hog``: the Pearson correlation of the two maps' histograms of oriented gradients
  (scikit-image's ``hog`` with its defaults, cells of 8 x 8 pixels; cells of a quarter of
  the side for maps smaller than 24 pixels).

A pair where a measure is undefined (a constant map) gets NaN, as in scipy and quantus.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from scipy import stats

MEASURES = ("spearman_abs", "spearman", "ssim", "hog")


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``[N]``: the Spearman rank correlation of each row of ``a`` with that of ``b``
    (``[N, ...]``, flattened; ties get their average rank, as scipy's)."""
    ra = stats.rankdata(a.detach().cpu().double().flatten(1).numpy(), axis=1)
    rb = stats.rankdata(b.detach().cpu().double().flatten(1).numpy(), axis=1)
    return _pearson(ra, rb)


def _pearson(a: np.ndarray, b: np.ndarray) -> torch.Tensor:
    a = a - a.mean(1, keepdims=True)
    b = b - b.mean(1, keepdims=True)
    denominator = np.sqrt((a * a).sum(1) * (b * b).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return torch.from_numpy((a * b).sum(1) / denominator).float()


def ssim(a: torch.Tensor, b: torch.Tensor, window: int = 7) -> torch.Tensor:
    """``[N]``: the structural similarity of each map of ``a`` with that of ``b``
    (``[N, h, w]``), computed for the whole batch at once (see the module doc)."""
    x = a.detach().cpu().double()[:, None]
    y = b.detach().cpu().double()[:, None]
    if min(x.shape[-2:]) < window:
        raise ValueError(f"maps of {tuple(x.shape[-2:])} are smaller than the SSIM window {window}")
    both = torch.cat([x, y], 1).flatten(1)
    span = both.amax(1) - both.amin(1)
    c1 = ((0.01 * span) ** 2)[:, None, None, None]
    c2 = ((0.03 * span) ** 2)[:, None, None, None]

    def mean(v: torch.Tensor) -> torch.Tensor:  # the window's mean where it fits whole
        return F.avg_pool2d(v, window, stride=1)

    ux, uy = mean(x), mean(y)
    sample = window * window / (window * window - 1)
    vx = sample * (mean(x * x) - ux * ux)
    vy = sample * (mean(y * y) - uy * uy)
    vxy = sample * (mean(x * y) - ux * uy)
    with np.errstate(invalid="ignore", divide="ignore"):
        s = (2 * ux * uy + c1) * (2 * vxy + c2) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.flatten(1).mean(1).float()


def hog_features(maps: torch.Tensor) -> np.ndarray:
    """``[N, F]``: scikit-image's histogram of oriented gradients of each map."""
    from skimage.feature import hog

    arrays = maps.detach().cpu().double().numpy()
    side = min(arrays.shape[1:])
    cell = 8 if side >= 24 else max(2, side // 4)
    return np.stack([hog(m, pixels_per_cell=(cell, cell)) for m in arrays])


def hog_similarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``[N]``: the Pearson correlation of the maps' HOG features (see the module doc)."""
    return _pearson(hog_features(a), hog_features(b))


_MEASURES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "spearman_abs": lambda a, b: spearman(a.abs(), b.abs()),
    "spearman": spearman,
    "ssim": ssim,
    "hog": hog_similarity,
}


def similarity(a: torch.Tensor, b: torch.Tensor, measure: str = "spearman_abs") -> torch.Tensor:
    """``[N]``: ``measure`` (one of :data:`MEASURES`) of each map of ``a`` with that of
    ``b`` (``[N, h, w]``).

    Raises:
        ValueError: an unknown measure, or batches of different shapes.
    """
    if measure not in _MEASURES:
        raise ValueError(f"unknown similarity {measure!r}; choose one of {', '.join(MEASURES)}")
    if a.shape != b.shape:
        raise ValueError(f"the maps differ in shape: {tuple(a.shape)} and {tuple(b.shape)}")
    return _MEASURES[measure](a, b)


def by_max(maps: torch.Tensor) -> torch.Tensor:
    """Each map of ``maps`` (``[N, ...]``) divided by its largest absolute value (quantus's
    ``normalise_by_max``, image by image); an all-zero map stays zero."""
    top = maps.abs().flatten(1).amax(1).clamp_min(1e-30)
    return maps / top.reshape(-1, *[1] * (maps.ndim - 1))


def entropy(maps: torch.Tensor, bins: int = 100) -> torch.Tensor:
    """``[N]``: the discrete entropy (nats) of each map's values in ``bins`` equal bins
    over its range (quantus's ``discrete_entropy``, eMPRT's complexity)."""
    arrays = maps.detach().cpu().double().flatten(1).numpy()
    return torch.tensor(
        [float(stats.entropy(np.histogram(m, bins=bins)[0])) for m in arrays],
        dtype=torch.float64,
    )


__all__ = [
    "MEASURES",
    "by_max",
    "entropy",
    "hog_features",
    "hog_similarity",
    "similarity",
    "spearman",
    "ssim",
]
