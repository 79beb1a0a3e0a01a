"""Every picture convlens draws: tensors in, matplotlib figures and files out.

Figures are built with matplotlib's object-oriented ``Figure`` (no pyplot state), so
they work the same in scripts, servers and notebooks.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from matplotlib.axes import Axes
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


def _show_image(ax: Axes, image: torch.Tensor) -> None:
    """``image`` ``[C, H, W]`` in [0, 1]: grayscale for one channel, RGB for three."""
    if image.shape[0] == 1:
        ax.imshow(image[0].numpy(), cmap="gray", vmin=0, vmax=1)
    else:
        ax.imshow(image.permute(1, 2, 0).numpy())


def _image_grid(n: int, cols: int = 6) -> tuple[Figure, list[Axes]]:
    """A figure with ``n`` image panels in rows of ``cols``, axes hidden."""
    cols = min(n, cols)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(cols * 2.1, rows * 2.3 + 0.4))
    axes = list(fig.subplots(rows, cols, squeeze=False).flat)
    for ax in axes:
        ax.set_axis_off()
    return fig, axes


def draw_unit_maps(
    image: torch.Tensor,
    maps: torch.Tensor,
    units: Sequence[int],
    peaks: Sequence[float],
    title: str,
    alpha: float = 0.5,
    cmap: str = "jet",
) -> Figure:
    """The image, then each unit's upsampled map overlaid on it (``maps``: ``[U, H, W]``).

    Each map is scaled by its own peak so weak units stay visible; the peak value is
    printed under the unit id.
    """
    fig, axes = _image_grid(len(units) + 1)
    _show_image(axes[0], image)
    axes[0].set_title("input", fontsize=9)
    for k, (u, peak) in enumerate(zip(units, peaks, strict=True), start=1):
        ax = axes[k]
        _show_image(ax, image)
        m = maps[k - 1]
        hi = float(m.max())
        ax.imshow(m.numpy(), cmap=cmap, alpha=alpha, vmin=0, vmax=hi if hi > 0 else 1)
        ax.set_title(f"unit {u}\npeak {float(peak):.2f}", fontsize=8)
    fig.suptitle(title, fontsize=10)
    return fig


def draw_region_match(
    image: torch.Tensor,
    region: torch.Tensor,
    units: Sequence[int],
    ious: Sequence[float],
    masks: torch.Tensor,
    title: str,
) -> Figure:
    """The region outlined on the image, then each unit's thresholded map (yellow) with
    the region's outline (white) and the IoU."""
    fig, axes = _image_grid(len(units) + 1)
    r = region.float().numpy()
    _show_image(axes[0], image)
    axes[0].contour(r, levels=[0.5], colors="white", linewidths=1.2)
    axes[0].set_title("region", fontsize=9)
    for k, (u, iou) in enumerate(zip(units, ious, strict=True), start=1):
        ax = axes[k]
        _show_image(ax, image)
        on = masks[k - 1].float()
        overlay = torch.stack(
            [torch.ones_like(on), 0.85 * torch.ones_like(on), torch.zeros_like(on), 0.6 * on],
            dim=-1,
        )  # yellow where "on"
        ax.imshow(overlay.numpy())
        ax.contour(r, levels=[0.5], colors="white", linewidths=1.0)
        ax.set_title(f"unit {u}\nIoU {float(iou):.3f}", fontsize=8)
    fig.suptitle(title, fontsize=10)
    return fig
