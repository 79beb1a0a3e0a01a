"""Figures of class maps (CAMs and pixel attributions, coloured by
:mod:`convlens.render.heatmaps`) and of the faithfulness table."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.figure
import torch

from convlens.interpret.faithfulness import MethodScore
from convlens.interpret.maps import registry
from convlens.render import heatmaps
from convlens.render.figure import (
    Figure,
    shorten,
    show_image,
    title_figure,
)
from convlens.render.heatmaps import MapStyle


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
        show_image(axes[i, 0], images[i])
        axes[i, 0].set_title(shorten(names[i]), fontsize=8)
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
    road = any(s.road_morf is not None for s in scores)
    if road:
        header += ["ROAD MoRF", "ROAD LeRF"]
    sanity = any(s.mprt is not None for s in scores)
    if sanity:
        header += ["MPRT", "eMPRT", "random logit"]
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
        if road:
            row += [_number(s.road_morf), _number(s.road_lerf)]
        if sanity:
            row += [_number(s.mprt), _number(s.emprt), _number(s.random_logit)]
        rows.append(row)
    return header, rows


def _number(value: float | None) -> str:
    if value is None:
        return ""
    return "n/a" if value != value else f"{value:.4g}"  # NaN: undefined for every image


__all__ = [
    "draw_class_maps",
    "draw_faithfulness",
    "faithfulness_table",
]
