"""Every picture convlens draws: tensors in, matplotlib figures and files out.

Figures are built with matplotlib's object-oriented ``Figure`` (no pyplot state), so
they work the same in scripts, servers and notebooks.
"""

from __future__ import annotations

import io
import json
import math
import os
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib.figure
import numpy as np
import torch
from matplotlib.axes import Axes

from convlens.core.fileio import atomic_write_bytes
from convlens.interpret.ablation import FewestUnits
from convlens.interpret.faithfulness import MethodScore
from convlens.interpret.filters import FilterTiles
from convlens.interpret.maps import registry
from convlens.interpret.visualize import Visualization
from convlens.render import heatmaps
from convlens.render.heatmaps import MapStyle
from convlens.sweep.results import SweepResults, is_log_scale, results_table
from convlens.sweep.spec import format_value, point_key


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


def _show_image(ax: Axes, image: torch.Tensor) -> None:
    """``image`` ``[C, H, W]`` in [0, 1]: grayscale for one channel, RGB for three."""
    if image.shape[0] == 1:
        ax.imshow(image[0].numpy(), cmap="gray", vmin=0, vmax=1)
    else:
        ax.imshow(image.permute(1, 2, 0).numpy())


def _image_grid(n: int, cols: int = 7) -> tuple[Figure, list[Axes]]:
    """A figure with ``n`` image panels in rows of ``cols``, axes hidden."""
    cols = min(n, cols)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(cols * 1.9, rows * 2.2 + 0.5), layout="constrained")
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
    style: MapStyle = heatmaps.ACTIVATIONS,
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
    title_figure(fig, title, 10)
    return fig


def draw_class_maps(
    images: Sequence[torch.Tensor],
    maps: torch.Tensor,
    labels: Sequence[Sequence[str]],
    names: Sequence[str],
    title: str,
    styles: MapStyle | Sequence[MapStyle] | None = None,
    colorbar: bool = True,
) -> Figure:
    """One row per image: the image, then one map per column over it.

    Args:
        images: ``N`` display images ``[C, H, W]`` in [0, 1].
        maps: ``[N, T, H, W]`` maps at the image's size: min-max scaled to [0, 1] for a
            CAM, the signed map for an attribution (see :mod:`convlens.render.heatmaps`).
        labels: per image, ``T`` captions ("class 91.2%").
        names: a caption for each input image.
        styles: how to draw the maps, one for all or one per column (default: a CAM's).
        colorbar: one colour bar per style: beside the figure when every column shares
            one, under each column otherwise.
    """
    n, t = maps.shape[:2]
    if styles is None:
        styles = MapStyle(sign="positive", scale="minmax", alpha=0.5)
    per_column = [styles] * t if isinstance(styles, MapStyle) else list(styles)
    if len(per_column) != t:
        raise ValueError(f"{len(per_column)} styles for {t} columns of maps")
    # square panels of 1.8 in, a line of caption above each, the colour bar beside
    fig = Figure(figsize=((t + 1) * 1.8 + 0.9, n * 2.05 + 0.7), layout="constrained")
    axes = fig.subplots(n, t + 1, squeeze=False)
    for i in range(n):
        _show_image(axes[i, 0], images[i])
        axes[i, 0].set_title(_shorten(names[i]), fontsize=8)
        axes[i, 0].set_axis_off()
        for j in range(t):
            heatmaps.draw_map(axes[i, j + 1], images[i], maps[i, j], per_column[j])
            axes[i, j + 1].set_title(labels[i][j], fontsize=8)
    if colorbar:
        if len(set(per_column)) == 1:
            heatmaps.add_colorbar(fig, list(axes[:, 1:].flat), per_column[0])
        else:
            for j, style in enumerate(per_column):
                heatmaps.add_colorbar(fig, list(axes[:, j + 1]), style, location="bottom")
    title_figure(fig, title, 10)
    return fig


def _shorten(text: str, width: int = 28) -> str:
    return text if len(text) <= width else "…" + text[-(width - 1) :]


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
            _show_image(ax, image)
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


# ----------------------------------------------------------------------------- sweeps

_UNITS = {
    "lr": "peak learning rate",
    "weight_decay": "weight decay (L2 coefficient)",
    "dropout": "dropout probability",
    "label_smoothing": "label smoothing ε",
    "epochs": "epochs",
    "batch_size": "batch size (images)",
    "widths": "channels per stage",
    "depth": "conv layers per stage",
    "warmup": "warm-up fraction of steps",
    "momentum": "momentum",
    "crop_pad": "crop padding (px)",
    "ema_decay": "EMA decay per step",
    "lookahead": "Lookahead decay",
    "backprop_fraction": "fraction of each batch trained on",
    "rank_every": "epochs per fresh ranking pass",
    "backprop_warmup": "images trained on in full first",
}


def draw_sweep_param(results: SweepResults, name: str) -> Figure:
    """Top-1 (%) of the training and validation sets against hyperparameter ``name``.

    Numeric values spanning a factor of 10 or more get a log axis; anything else that
    is not a plain number (choices, layer layouts, values including 0) a categorical
    one. The baseline configuration is marked with a star and a dotted line.
    """
    # Long because numeric, list-valued and categorical axes each need their own ticks.
    trials = results.series(name)
    values = [results.value(t, name) for t in trials]
    log = is_log_scale(values, name)
    numeric = log or all(
        isinstance(v, int | float) and not isinstance(v, bool) and v > 0 for v in values
    )
    fig = Figure(figsize=(5.2, 3.6))
    ax = fig.subplots()
    if numeric:
        xs = [float(v) for v in values]
        order = sorted(range(len(xs)), key=lambda i: xs[i])
    else:
        plain = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
        layouts = all(isinstance(v, list | tuple) for v in values)
        if plain:
            ordered = sorted(set(values), key=float)
        elif layouts:  # channel or depth layouts: by total size, then stage by stage
            ordered = sorted(values, key=lambda v: (sum(v), tuple(v)))
        else:  # choices in the order the sweep lists them, the baseline's value first
            listed = results.spec.choices.get(name) or [
                p[name] for p in results.spec.points if name in p
            ]
            rank = {format_value(v): i for i, v in reversed(list(enumerate(listed)))}
            ordered = sorted(values, key=lambda v: rank.get(format_value(v), -1))
        labels = list(dict.fromkeys(format_value(v) for v in ordered))  # lists are not hashable
        index = {lab: i for i, lab in enumerate(labels)}
        xs = [float(index[format_value(v)]) for v in values]
        order = sorted(range(len(xs)), key=lambda i: xs[i])
        ax.set_xticks(range(len(labels)), labels, rotation=20 if len(labels) > 3 else 0)
    for key, style, label in (
        (
            "train_top1",
            dict(marker="s", ls="--", color="tab:orange"),
            "training set (no augmentation)",
        ),
        ("val_top1", dict(marker="o", ls="-", color="tab:blue"), "validation"),
    ):
        ys = [100 * getattr(trials[i], key) for i in order]
        xo = [xs[i] for i in order]
        if results.spec.kind == "preset":
            ax.plot(xo, ys, label=label, **style)  # type: ignore[arg-type]
        else:  # several trials per value: points, and the best per value joined
            ax.scatter(xo, ys, s=14, alpha=0.5, color=style["color"])
            best: dict[float, float] = {}
            for x, y in zip(xo, ys, strict=True):
                best[x] = max(best.get(x, y), y)
            ax.plot(list(best), list(best.values()), label=f"{label} (best)", **style)  # type: ignore[arg-type]
    base = results.baseline
    if base is not None:
        bx = [x for x, t in zip(xs, trials, strict=True) if t is base]
        if bx:
            ax.plot(
                bx,
                [100 * base.val_top1],
                marker="*",
                ms=14,
                color="black",
                ls="none",
                label="baseline config",
            )
        ax.axhline(100 * base.val_top1, color="gray", lw=0.8, ls=":")
    if log:
        ax.set_xscale("log")
    if numeric:  # label the values tried, not a generic scale
        ticks = sorted(set(xs))
        ax.set_xticks(ticks, [format_value(x) for x in ticks])
        ax.minorticks_off()
    ax.set_xlabel(_UNITS.get(name, name) + (" (log scale)" if log else ""))
    ax.set_ylabel("top-1 accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    epochs = results.spec.base.get("epochs")
    ax.set_title(f"{name} ({epochs} epochs per trial)", fontsize=10)
    fig.tight_layout()
    return fig


def draw_learning_curves(results: SweepResults, top: int = 10) -> Figure:
    """Validation top-1 per epoch for the ``top`` best trials (and the baseline)."""
    fig = Figure(figsize=(8.0, 4.0))
    ax = fig.subplots()
    shown = results.trials[:top]
    if results.baseline is not None and results.baseline not in shown:
        shown.append(results.baseline)
    for t in shown:
        label = point_key(t.point) if t.point else "baseline config"
        epochs = range(1, len(t.curve) + 1)
        ax.plot(
            list(epochs),
            [100 * v for v in t.curve],
            label=label,
            color="black" if not t.point else None,
            lw=2.0 if not t.point else 1.2,
        )
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation top-1 accuracy (%)")
    if max(len(t.curve) for t in shown) >= 5:  # zoom past the first epochs' climb
        late = [100 * v for t in shown for v in t.curve[len(t.curve) // 3 :]]
        ax.set_ylim(min(late) - 0.5, max(late) + 0.5)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.spines[["top", "right"]].set_visible(False)
    ax.set_xticks(range(1, max(len(t.curve) for t in shown) + 1))
    ax.set_title(f"learning curves of the {len(shown)} best trials", fontsize=10)
    fig.tight_layout()
    return fig


def write_sweep_figures(results: SweepResults, out: str | os.PathLike[str]) -> list[Path]:
    """PNG and SVG per hyperparameter and for the learning curves, plus the results
    table as CSV and Markdown, into ``out``. Returns the paths written."""
    out = Path(out)
    written = []
    figures = {f"param-{n}": draw_sweep_param(results, n) for n in results.varied()}
    figures["curves"] = draw_learning_curves(results)
    for stem, fig in figures.items():
        for suffix in (".png", ".svg"):
            written.append(save_figure(fig, out / f"{stem}{suffix}"))
    csv, md = results_table(results)
    for name, text in (("results.csv", csv), ("results.md", md)):
        atomic_write_bytes(out / name, text.encode())
        written.append(out / name)
    return written


def draw_run_curves(metrics: Sequence[dict[str, float]], title: str) -> Figure:
    """Top-1 per epoch of one training run: the running training top-1 (augmented
    batches) and the validation top-1, with the training loss on a second axis."""
    epochs = [int(m["epoch"]) for m in metrics]
    fig = Figure(figsize=(6.0, 3.6))
    ax = fig.subplots()
    ax.plot(epochs, [100 * m["train_top1"] for m in metrics], "s--", label="training (running)")
    ax.plot(epochs, [100 * m["val_top1"] for m in metrics], "o-", label="validation")
    ax.set_xlabel("epoch")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_xticks(epochs)
    loss = ax.twinx()
    loss.plot(epochs, [m["train_loss"] for m in metrics], color="gray", lw=1, label="train loss")
    loss.set_ylabel("training loss", color="gray")
    lines = ax.get_lines() + loss.get_lines()
    ax.legend(lines, [str(line.get_label()) for line in lines], fontsize=8, frameon=False,
              loc="center right")  # fmt: skip
    ax.grid(alpha=0.3)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def draw_faithfulness(scores: Sequence[MethodScore], title: str) -> Figure:
    """Mean deletion and insertion curves, one line per method in a colour of its own
    (up to 20; the pixel attributions dash-dotted), the reference maps (random,
    edges) dashed in grey; one legend beside both panels, most faithful first, with
    both AUCs."""
    fig = Figure(figsize=(12.0, 4.4))
    axes = fig.subplots(1, 2)
    ranked = sorted(scores, key=lambda s: s.deletion_auc - s.insertion_auc)
    # tab20's strong shades, then its light ones, without its greys (the references')
    tab20 = [matplotlib.colormaps["tab20"](i) for i in range(20)]
    palette = [tab20[i] for i in (*range(0, 20, 2), *range(1, 20, 2)) if i not in (14, 15)]
    methods = [s.method for s in scores if s.method not in ("random", "edges")]
    colours = {m: palette[i % len(palette)] for i, m in enumerate(methods)}
    pixel = registry.names(registry.PIXEL)  # dash-dotted
    for ax, which, better in zip(axes, ("deletion", "insertion"), ("lower", "higher"), strict=True):
        for s in ranked:
            reference = s.method in ("random", "edges")
            ax.plot(
                s.fractions.numpy(),
                getattr(s, which).numpy(),
                linestyle="--" if reference else "-." if s.method in pixel else "-",
                linewidth=1.4,
                color=("0.55" if s.method == "random" else "0.3")
                if reference
                else colours[s.method],
                label=f"{s.method}  (del {s.deletion_auc:.3f}, ins {s.insertion_auc:.3f})",
            )
        ax.set_xlabel(f"fraction of pixels {'removed' if which == 'deletion' else 'restored'}")
        ax.set_ylabel("class probability")
        ax.set_title(f"{which}: {better} area is more faithful", fontsize=9)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(
        handles,
        labels,
        loc="center right",
        bbox_to_anchor=(0.995, 0.5),
        fontsize=7.5,
        frameon=False,
        title="most faithful first (ins - del)",
        title_fontsize=8,
    )
    title_figure(fig, title, 10)
    fig.tight_layout(rect=(0, 0, 0.76, 1))
    return fig


def faithfulness_table(scores: Sequence[MethodScore]) -> tuple[list[str], list[list[str]]]:
    """Header and rows, most faithful by insertion minus deletion AUC first."""
    header = ["method", "images", "deletion AUC", "insertion AUC", "ins - del", "avg drop",
              "increase"]  # fmt: skip
    captum = any(s.infidelity is not None for s in scores)
    if captum:
        header += ["infidelity", "max-sensitivity"]
    ranked = sorted(scores, key=lambda s: s.deletion_auc - s.insertion_auc)
    rows = []
    for s in ranked:
        row = [
            s.method,
            str(s.images),
            f"{s.deletion_auc:.4f}",
            f"{s.insertion_auc:.4f}",
            f"{s.insertion_auc - s.deletion_auc:.4f}",
            f"{s.average_drop:.2%}",
            f"{s.increase:.2%}",
        ]
        if captum:
            row += [_number(s.infidelity), _number(s.sensitivity)]
        rows.append(row)
    return header, rows


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.4g}"


# ----------------------------------------------------------------------------- visualisation


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
    "Figure",
    "describe_fewest_units",
    "describe_visualization",
    "draw_ablation",
    "draw_class_maps",
    "draw_faithfulness",
    "draw_filters",
    "draw_learning_curves",
    "draw_region_match",
    "draw_run_curves",
    "draw_sweep_param",
    "draw_unit_maps",
    "draw_visualization_grid",
    "draw_visualization_sanity",
    "faithfulness_table",
    "save_figure",
    "title_figure",
    "top_k_table",
    "visualization_record",
    "visualization_tile",
    "write_sweep_figures",
    "write_visualization",
]
