"""Procedurally drawn concept images: stripes at an angle, dots, checkerboards, plain
grey levels and uniform noise, each image with its own random scale and phase, so a
concept set is a family rather than one picture. For TCAV's concept sets where no folder
of photographs exists (``--concept stripes=pattern:stripes-45``).

A pattern's name: ``stripes-ANGLE`` (degrees, e.g. ``stripes-0``, ``stripes-45``),
``dots``, ``checkers``, ``plain`` or ``noise``.
"""

from __future__ import annotations

import math

import torch

from convlens.data.images import Preprocessing, normalize

KINDS = ("stripes", "dots", "checkers", "plain", "noise")


def parse(name: str) -> tuple[str, float]:
    """``"stripes-45"`` -> ``("stripes", 45.0)``; the angle is 0 for the other kinds.

    Raises:
        ValueError: an unknown kind or an angle that is not a number.
    """
    kind, _, angle = name.partition("-")
    if kind not in KINDS:
        raise ValueError(f"unknown pattern {name!r}; choose one of {', '.join(KINDS)}")
    if angle and kind != "stripes":
        raise ValueError(f"pattern {name!r}: only stripes take an angle (stripes-45)")
    try:
        return kind, float(angle) if angle else 0.0
    except ValueError as e:
        raise ValueError(f"pattern {name!r}: the angle must be a number of degrees") from e


def draw(name: str, n: int, size: int, channels: int = 1, seed: int = 0) -> torch.Tensor:
    """``[n, channels, size, size]`` images of pattern ``name`` in [0, 1], the same for a
    given seed; grey (every channel alike)."""
    kind, angle = parse(name)
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(
        torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32),
        indexing="ij",
    )  # fmt: skip
    scale = size / 28  # periods in FashionMNIST pixels, scaled to the image
    out = torch.empty(n, 1, size, size)
    for i in range(n):
        u = torch.rand(4, generator=g)
        period = (3 + 5 * float(u[0])) * scale
        phase = float(u[1]) * period
        if kind == "stripes":
            t = math.radians(angle)
            along = xx * math.cos(t) + yy * math.sin(t)
            img = (torch.sin(2 * math.pi * (along + phase) / period) > 0).float()
        elif kind == "checkers":
            cell = period / 2
            img = (((xx + phase) // cell + (yy + phase) // cell) % 2).float()
        elif kind == "dots":
            cy = (yy + phase) % period - period / 2
            cx = (xx + float(u[2]) * period) % period - period / 2
            img = ((cx**2 + cy**2) <= (period / 4) ** 2).float()
        elif kind == "plain":
            img = torch.full((size, size), float(u[3]))
        else:
            img = torch.rand(size, size, generator=g)
        out[i, 0] = img
    return out.expand(n, channels, size, size).contiguous()


def as_inputs(images: torch.Tensor, preprocessing: Preprocessing) -> torch.Tensor:
    """Model inputs from images in [0, 1] ``[N, C, H, W]``, as the model's own
    preprocessing makes them (inverted first where it inverts)."""
    x = 1.0 - images if preprocessing.invert else images
    return normalize(x, preprocessing)


__all__ = ["KINDS", "as_inputs", "draw", "parse"]
