"""Figures of units: filters, feature maps, region matches, ablations and the fewest
units, and the pictures of feature visualisation."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from convlens.interpret.ablation import FewestUnits
from convlens.interpret.filters import FilterTiles
from convlens.interpret.visualize import Visualization
from convlens.render import heatmaps
from convlens.render.figure import (
    Figure,
    image_grid,
    save_figure,
    show_image,
    title_figure,
)
from convlens.render.heatmaps import MapStyle


def draw_filters(ft: FilterTiles, title: str | None = None) -> Figure:
    """A grid of kernels: colour tiles for RGB filters, or a filters x input-channels
    grid of grayscale tiles (rows: output filters, columns: input channels)."""
    n = len(ft.filters)
    shape = "x".join(map(str, ft.weight_shape))
    head = title or f"{ft.layer}: weight {shape}"
    if ft.rgb or len(ft.in_channels) == 1:  # one tile per filter, in a grid
        cols = min(n, 8 if n <= 32 else 16)
        rows = math.ceil(n / cols)
        fig = Figure(figsize=(cols * 0.85, rows * 0.95 + 0.55), layout="constrained")
        axes = fig.subplots(rows, cols, squeeze=False)
        for k, ax in enumerate(axes.flat):
            ax.set_axis_off()
            if k < n:
                if ft.rgb:
                    ax.imshow(ft.tiles[k].permute(1, 2, 0).numpy(), interpolation="nearest")
                else:
                    tile = ft.tiles[k, 0].numpy()
                    ax.imshow(tile, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
                ax.set_title(str(ft.filters[k]), fontsize=7, pad=2)
        what = (
            "in colour (input channels are R, G, B)"
            if ft.rgb
            else "in grayscale (one input channel)"
        )
        title_figure(fig, f"{head} — {n} filters {what}", 10)
        return fig
    c = len(ft.in_channels)
    fig = Figure(figsize=(c * 0.8 + 0.6, n * 0.8 + 0.8), layout="constrained")
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
    title_figure(fig, f"{head} — rows: output filters, columns: input channels (grayscale)", 10)
    return fig


def draw_unit_maps(
    image: torch.Tensor,
    maps: torch.Tensor,
    units: Sequence[int],
    peaks: Sequence[float],
    title: str,
    style: MapStyle = heatmaps.ACTIVATIONS,
) -> Figure:
    """The image, then each unit's upsampled map overlaid on it (``maps``: ``[U, H, W]``).

    Each map is scaled by its own peak so weak units stay visible; the peak value is
    printed under the unit id.
    """
    fig, axes = image_grid(len(units) + 1)
    show_image(axes[0], image)
    axes[0].set_title("input", fontsize=9)
    for k, (u, peak) in enumerate(zip(units, peaks, strict=True), start=1):
        ax = axes[k]
        heatmaps.draw_map(ax, image, heatmaps.by_peak(maps[k - 1]), style)
        ax.set_title(f"unit {u}\npeak {float(peak):.2f}", fontsize=8)
    title_figure(fig, title, 10)
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
    fig, axes = image_grid(len(units) + 1)
    r = region.float().numpy()
    show_image(axes[0], image)
    axes[0].contour(r, levels=[0.5], colors="white", linewidths=1.2)
    axes[0].set_title("region", fontsize=9)
    for k, (u, iou) in enumerate(zip(units, ious, strict=True), start=1):
        ax = axes[k]
        show_image(ax, image)
        on = masks[k - 1].float()
        overlay = torch.stack(
            [torch.ones_like(on), 0.85 * torch.ones_like(on), torch.zeros_like(on), 0.6 * on],
            dim=-1,
        )  # yellow where "on"
        ax.imshow(overlay.numpy())
        ax.contour(r, levels=[0.5], colors="white", linewidths=1.0)
        ax.set_title(f"unit {u}\nIoU {float(iou):.3f}", fontsize=8)
    title_figure(fig, title, 10)
    return fig


def draw_ablation(
    image: torch.Tensor,
    maps: torch.Tensor,
    units: Sequence[int],
    classes: Sequence[str],
    before: torch.Tensor,
    after: torch.Tensor,
    title: str,
    top: int = 5,
) -> Figure:
    """The ablated units' maps over the image (``maps``: ``[U, H, W]``, at most 11
    shown), and a bar chart of the probabilities before and after ablation for the
    classes in either top-``top`` (``before``/``after``: ``[K]`` probabilities)."""
    shown = list(units)[:11]
    rows = math.ceil((len(shown) + 1) / 8)  # balanced rows of at most 8 panels
    cols = math.ceil((len(shown) + 1) / rows)
    fig = Figure(figsize=(max(cols * 2.0, 8.0), rows * 2.2 + 2.8), layout="constrained")
    grid = fig.add_gridspec(rows + 1, cols, height_ratios=[1.0] * rows + [1.25])
    for k in range(rows * cols):
        ax = fig.add_subplot(grid[k // cols, k % cols])
        ax.set_axis_off()
        if k == 0:
            show_image(ax, image)
            ax.set_title("input", fontsize=9)
        elif k <= len(shown):
            heatmaps.draw_map(ax, image, heatmaps.by_peak(maps[k - 1]), heatmaps.ACTIVATIONS)
            ax.set_title(f"unit {shown[k - 1]} (ablated)", fontsize=8)
    picked = sorted(
        set(before.topk(top).indices.tolist()) | set(after.topk(top).indices.tolist()),
        key=lambda c: -float(before[c]),
    )
    ax = fig.add_subplot(grid[rows, :])
    pos = torch.arange(len(picked), dtype=torch.float32)
    ax.bar((pos - 0.2).numpy(), [float(before[c]) for c in picked], 0.4, label="before")
    ax.bar((pos + 0.2).numpy(), [float(after[c]) for c in picked], 0.4, label="after ablation")
    ax.set_xticks(pos.numpy(), [classes[c] for c in picked], rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("probability")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8, frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    title_figure(fig, title, 10)
    return fig


def top_k_table(
    classes: Sequence[str], columns: Sequence[tuple[str, torch.Tensor]], k: int = 5
) -> str:
    """Side-by-side plain-text top-``k`` lists, one column per ``(heading, probs [K])``."""
    width = max(len(c) for c in classes) + 10
    cells = []
    for heading, probs in columns:
        top = probs.topk(min(k, probs.numel()))
        rows = [
            f"{i + 1}. {classes[c]:<{width - 10}} {p:6.1%}"
            for i, (p, c) in enumerate(zip(top.values.tolist(), top.indices.tolist(), strict=True))
        ]
        cells.append([heading, *rows])
    col_width = max(len(row) for col in cells for row in col[1:]) + 6
    return "\n".join(
        "".join(f"{col[r]:<{col_width}}" for col in cells).rstrip() for r in range(len(cells[0]))
    )


def describe_fewest_units(r: FewestUnits, classes: Sequence[str]) -> str:
    """A few lines saying what :func:`convlens.ablation.fewest_units` found and how."""
    before, after = r.logits_before.softmax(0), r.logits_after.softmax(0)
    how = {
        "optimal": "exact minimum over all subsets (closed form, per rival class)",
        "contribution": "in decreasing order of FC weight x mean activation (closed form)",
        "weight": "in decreasing order of FC weight (closed form)",
        "greedy": "greedy: each step removes the unit that most lowers the top-1 margin",
    }[r.order]
    stop = {
        "budget": f"out of time after {r.seconds:.0f} s; these are the best units so far",
        "max_units": f"stopped at the most units allowed ({len(r.units)})",
    }
    lines = [f"fewest units of {r.layer} ({r.mode} ablation), {how}:"]
    orig = f"{classes[r.original_class]} ({float(before[r.original_class]):.1%})"
    if not r.found:
        lines.append(
            f"  no set found: after removing {len(r.units)} units the top-1 is still {orig}"
        )
        if r.stopped in stop:
            lines.append(f"  {stop[r.stopped]}")
    else:
        lines.append(f"  {len(r.units)} units: {list(r.units)}")
        lines.append(f"  top-1 {orig} -> {classes[r.new_class]} ({float(after[r.new_class]):.1%})")
    if r.predicted_logits is not None:
        gap = float((r.predicted_logits - r.logits_after).abs().max())
        lines.append(
            f"  confirmed by a real forward pass: max |closed form - real| logit = {gap:.2e}"
        )
    else:
        lines.append(f"  {r.forward_passes} images run through the model")
    return "\n".join(lines)


def visualization_tile(v: Visualization, k: int, side: int = 128) -> np.ndarray:
    """The ``D`` images of objective ``k`` side by side, ``[side, D * side, 3]`` uint8."""
    import torch.nn.functional as F

    imgs = F.interpolate(v.images[k], size=(side, side), mode="bilinear", align_corners=False)
    rgb = imgs.expand(-1, 3, -1, -1) if imgs.shape[1] == 1 else imgs
    row = torch.cat(list(rgb), dim=2)  # [3, side, D * side]
    return (row.clamp(0, 1).permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)


def write_visualization(v: Visualization, out: str | os.PathLike[str], title: str) -> Path:
    """The folder ``out``: ``unit-NNNN.png`` per objective (dead units are not drawn),
    ``grid.png``, ``sanity.png`` and ``visualize.json``; written whole or not at all."""
    from PIL import Image

    from convlens.core.fileio import atomic_directory

    out = Path(out)
    with atomic_directory(out) as tmp:
        for k, u in enumerate(v.units):
            if u in v.dead:
                continue
            Image.fromarray(visualization_tile(v, k)).save(tmp / f"unit-{u:04d}.png")
        save_figure(draw_visualization_grid(v, title), tmp / "grid.png", dpi=110)
        save_figure(draw_visualization_sanity(v, title), tmp / "sanity.png", dpi=110)
        (tmp / "visualize.json").write_text(json.dumps(visualization_record(v), indent=1))
    return out


def visualization_record(v: Visualization) -> dict[str, Any]:
    rows = []
    for k, u in enumerate(v.units):
        row: dict[str, Any] = {
            "unit": u,
            "dead": u in v.dead,
            "activation": v.activation[k].tolist(),
            "start": float(v.curve[0, k]),
        }
        if v.dataset_max is not None and v.dataset_min is not None:
            row["dataset_max"], row["dataset_min"] = (
                float(v.dataset_max[k]),
                float(v.dataset_min[k]),
            )
        if v.diversity_similarity is not None:
            row["gram_similarity"] = float(v.diversity_similarity[k])
        rows.append(row)
    return {"layer": v.layer, "objective": v.objective, "negative": v.negative,
            "steps": int(v.curve.shape[0]), "units": rows}  # fmt: skip


def draw_visualization_grid(v: Visualization, title: str) -> Figure:
    """Every objective's first image in a grid, labelled by unit."""
    live = [k for k, u in enumerate(v.units) if u not in v.dead] or [0]
    cols = min(16, len(live))
    rows = (len(live) + cols - 1) // cols
    fig = Figure(figsize=(max(1.4 * cols, 3.2), 1.6 * rows + 0.45), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    for ax in axes:
        ax.set_axis_off()
    for ax, k in zip(axes, live, strict=False):
        img = v.images[k, 0].clamp(0, 1)
        if img.shape[0] == 1:
            ax.imshow(img[0].numpy(), cmap="gray", vmin=0, vmax=1)
        else:
            ax.imshow(img.permute(1, 2, 0).numpy())
        ax.set_title(str(v.units[k]), fontsize=7)
    what = f"{v.objective}{' (negative)' if v.negative else ''}"
    dead = f"; {len(v.dead)} dead units not drawn" if v.dead else ""
    title_figure(fig, f"{title}: {what}{dead}", 9)
    return fig


def draw_visualization_sanity(v: Visualization, title: str) -> Figure:
    """Left: each unit's activation for its picture against the data set's maximum (and
    minimum), with the lines 1x and 1.5x; right: the objective at every step."""
    fig = Figure(figsize=(10, 4))
    left, right = fig.subplots(1, 2)
    act = v.activation.mean(1).numpy()
    if v.dataset_max is not None and v.dataset_min is not None:
        ref = (v.dataset_min if v.negative else v.dataset_max).numpy()
        left.scatter(ref, act, s=10, color="#4c72b0")
        lo, hi = float(min(ref.min(), act.min(), 0)), float(max(ref.max(), act.max()))
        xs = np.linspace(lo, hi, 2)
        left.plot(xs, xs, color="#999", lw=1, label="as the data set's extreme")
        left.plot(xs, 1.5 * xs, color="#c44e52", lw=1, ls="--", label="1.5x")
        left.set_xlabel(f"data set {'minimum' if v.negative else 'maximum'}")
        left.set_ylabel("for the visualisation")
        left.legend(fontsize=8, frameon=False)
    else:
        left.bar(range(len(act)), act, color="#4c72b0")
        left.set_xlabel("objective")
        left.set_ylabel("activation")
    left.set_title("activation", fontsize=9)
    right.plot(v.curve.numpy(), lw=0.6, alpha=0.6)
    right.set_xlabel("step")
    right.set_title(f"{v.objective} during the optimisation", fontsize=9)
    for ax in (left, right):
        ax.spines[["top", "right"]].set_visible(False)
    title_figure(fig, title, 10)
    return fig


def describe_visualization(v: Visualization) -> str:
    """Two lines: what was optimised and how far it went."""
    live = [k for k, u in enumerate(v.units) if u not in v.dead]
    lines = [
        f"{v.objective}{' (negative)' if v.negative else ''} of {len(v.units)} objective(s) "
        f"of {v.layer}, {v.curve.shape[0]} steps; {len(v.dead)} dead"
    ]
    if v.dataset_max is not None and live:
        ratio = v.activation.mean(1)[live] / v.dataset_max[live].clamp_min(1e-12)
        reach = float((ratio >= 1.5).float().mean())
        lines.append(
            f"  {reach:.0%} of live units reach 1.5x their data set maximum (median "
            f"{float(ratio.median()):.2f}x)"
        )
    return "\n".join(lines)


__all__ = [
    "describe_fewest_units",
    "describe_visualization",
    "draw_ablation",
    "draw_filters",
    "draw_region_match",
    "draw_unit_maps",
    "draw_visualization_grid",
    "draw_visualization_sanity",
    "top_k_table",
    "visualization_record",
    "visualization_tile",
    "write_visualization",
]
