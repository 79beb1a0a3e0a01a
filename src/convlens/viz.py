"""Every picture convlens draws: tensors in, matplotlib figures and files out.

Figures are built with matplotlib's object-oriented ``Figure`` (no pyplot state), so
they work the same in scripts, servers and notebooks.
"""

from __future__ import annotations

import io
import math
import os
from pathlib import Path

from matplotlib.figure import Figure

from convlens.fileio import atomic_write_bytes
from convlens.filters import FilterTiles


def save_figure(fig: Figure, path: str | os.PathLike[str], dpi: int = 150) -> Path:
    """Write ``fig`` atomically; the format follows the suffix (.png, .svg, .pdf)."""
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower() or "png"
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=dpi, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())
    return path


def draw_filters(ft: FilterTiles, title: str | None = None) -> Figure:
    """A grid of kernels: colour tiles for RGB filters, or a filters x input-channels
    grid of grayscale tiles (rows: output filters, columns: input channels)."""
    n = len(ft.filters)
    shape = "x".join(map(str, ft.weight_shape))
    head = title or f"{ft.layer}: weight {shape}"
    if ft.rgb:
        cols = min(n, 8 if n <= 32 else 16)
        rows = math.ceil(n / cols)
        fig = Figure(figsize=(cols * 0.9, rows * 0.9 + 0.6))
        axes = fig.subplots(rows, cols, squeeze=False)
        for k, ax in enumerate(axes.flat):
            ax.set_axis_off()
            if k < n:
                ax.imshow(ft.tiles[k].permute(1, 2, 0).numpy(), interpolation="nearest")
                ax.set_title(str(ft.filters[k]), fontsize=7, pad=2)
        fig.suptitle(f"{head} — {n} filters in colour (input channels are R, G, B)", fontsize=10)
        return fig
    c = len(ft.in_channels)
    fig = Figure(figsize=(c * 0.8 + 0.8, n * 0.8 + 0.8))
    axes = fig.subplots(n, c, squeeze=False)
    for r in range(n):
        for j in range(c):
            ax = axes[r, j]
            ax.imshow(ft.tiles[r, j].numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"in {ft.in_channels[j]}", fontsize=7, pad=2)
            if j == 0:
                ax.set_ylabel(f"f{ft.filters[r]}", fontsize=7, rotation=0, labelpad=12, va="center")
    fig.suptitle(f"{head} — rows: output filters, columns: input channels (grayscale)", fontsize=10)
    return fig
