"""What every figure of convlens shares: a notebook-friendly ``Figure``, titles that
wrap, atomic saving in any format, and image panels.

Figures are built with matplotlib's object-oriented ``Figure`` (no pyplot state), so
they work the same in scripts, servers and notebooks.
"""

from __future__ import annotations

import io
import math
import os
import textwrap
from pathlib import Path

import matplotlib.figure
import numpy as np
import torch
from matplotlib.axes import Axes
from PIL import Image

from convlens.core.fileio import atomic_write_bytes


class Figure(matplotlib.figure.Figure):
    """A matplotlib figure that shows itself as a picture where it is the value of a
    notebook cell (Jupyter, JupyterLab, VS Code call ``_repr_png_``), also when pyplot
    and its inline backend were never imported, as is the case with convlens alone."""

    def _repr_png_(self) -> bytes:
        buf = io.BytesIO()
        self.savefig(buf, format="png", dpi=100, bbox_inches="tight")
        return buf.getvalue()


def title_figure(fig: matplotlib.figure.Figure, text: str, fontsize: int = 10) -> None:
    """The figure's title, wrapped to the figure's width: a title wider than the
    panels would widen the saved picture (``bbox_inches="tight"``) with blank bands."""
    width_in = fig.get_size_inches()[0]
    chars = max(30, int(width_in * 72 / (0.55 * fontsize)))
    fig.suptitle(textwrap.fill(text, chars), fontsize=fontsize)


def png_bytes(array: np.ndarray) -> bytes:
    """An image array (``[H, W]``, ``[H, W, 3]`` or ``[H, W, 4]`` uint8) as PNG bytes,
    fast to write (compression level 1)."""
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def save_figure(
    fig: matplotlib.figure.Figure, path: str | os.PathLike[str], dpi: int = 150
) -> Path:
    """Write ``fig`` atomically; the format follows the suffix (.png, .svg, .pdf)."""
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower() or "png"
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=dpi, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())
    return path


def show_image(ax: Axes, image: torch.Tensor) -> None:
    """``image`` ``[C, H, W]`` in [0, 1]: grayscale for one channel, RGB for three."""
    if image.shape[0] == 1:
        ax.imshow(image[0].numpy(), cmap="gray", vmin=0, vmax=1)
    else:
        ax.imshow(image.permute(1, 2, 0).numpy())


def image_grid(n: int, cols: int = 7) -> tuple[Figure, list[Axes]]:
    """A figure with ``n`` image panels in rows of ``cols``, axes hidden."""
    cols = min(n, cols)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(cols * 1.9, rows * 2.2 + 0.5), layout="constrained")
    axes = list(fig.subplots(rows, cols, squeeze=False).flat)
    for ax in axes:
        ax.set_axis_off()
    return fig, axes


def shorten(text: str, width: int = 28) -> str:
    return text if len(text) <= width else "…" + text[-(width - 1) :]


__all__ = [
    "Figure",
    "image_grid",
    "png_bytes",
    "save_figure",
    "shorten",
    "show_image",
    "title_figure",
]
