"""Total Sobol indices of concepts (Fel et al., CVPR 2023, "CRAFT", section 3.2): how
much of the variance of a class's score is due to each concept, interactions included,
when the concepts' coefficients are scaled by random masks in ``[0, 1]``.

The design is CRAFT's: ``designs`` points of an unscrambled Halton sequence in twice the
concepts' dimensions give the matrices ``A`` and ``B``; ``C_i`` is ``A`` with column
``i`` taken from ``B``. Jansen's estimator (Jansen 1999) then gives the total index of
concept ``i``: ``sum_j (f(A_j) - f(C_ij))^2 / (2 n Var f(A))``.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.stats import qmc


def design(concepts: int, designs: int = 32) -> torch.Tensor:
    """``[(concepts + 2) * designs, concepts]``: the masks ``A``, ``B``, then each
    ``C_i``, in that order."""
    ab = qmc.Halton(2 * concepts, scramble=False).random(designs).astype(np.float32)
    a, b = ab[:, :concepts], ab[:, concepts:]
    replicated = np.repeat(a[None], concepts, axis=0)
    for i in range(concepts):
        replicated[i, :, i] = b[:, i]
    return torch.from_numpy(np.concatenate([a, b, replicated.reshape(-1, concepts)]))


def total_indices(scores: torch.Tensor, concepts: int, designs: int = 32) -> torch.Tensor:
    """``[..., concepts]``: Jansen's total Sobol index of each concept, from ``scores``
    ``[(concepts + 2) * designs, ...]``, the outputs for the masks of :func:`design`
    (further dimensions, such as images or classes, are kept)."""
    scores = scores.double()
    a = scores[:designs]
    c = scores[2 * designs :].reshape(concepts, designs, *scores.shape[1:])
    var = a.var(0, unbiased=True)
    sums = (a[None] - c).pow(2).sum(1)
    # a score the masks do not move (a class the concepts cannot change): no index
    indices = torch.where(var > 0, sums / (2 * designs * var.clamp_min(1e-300)), 0.0)
    return indices.movedim(0, -1).float()


__all__ = ["design", "total_indices"]
