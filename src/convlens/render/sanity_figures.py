"""Figures of the sanity checks: cascading randomisation as in Adebayo et al.'s Figure 2
(each method's map of one image as the layers are randomised from the top), and the
similarity of the maps to the trained network's, layer by layer, for every method."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from convlens.interpret.sanity import Randomisation
from convlens.render.figure import Figure, shorten, show_image, title_figure
from convlens.render.heatmaps import MapStyle, add_colorbar, draw_map

# every method's maps drawn alike: the sanity checks compare absolute values
ABSOLUTE = MapStyle(sign="absolute", scale="clip", outlier_percentile=1.0)
MEASURE_NAMES = {
    "spearman_abs": "Spearman (absolute maps)",
    "spearman": "Spearman (signed maps)",
    "ssim": "SSIM",
    "hog": "HOG similarity",
}


def draw_cascade(
    image: torch.Tensor,
    results: Sequence[Randomisation],
    names: dict[str, str],
    index: int = 0,
    title: str = "",
) -> Figure:
    """One row per method: image ``index``'s map from the trained network, then after
    each step of the cascade (``results`` kept with ``keep > index``); ``image`` is the
    displayed picture (``[C, H, W]`` in [0, 1]), drawn first. Maps in absolute value,
    each clipped at its own top 1%."""
    steps = results[0].layers
    cols = 2 + len(steps)
    fig = Figure(figsize=(1.25 * cols + 1.0, 1.3 * len(results) + 1.2), layout="constrained")
    axes = fig.subplots(len(results), cols, squeeze=False)
    for row, result in zip(axes, results, strict=True):
        if result.maps is None or result.maps.shape[1] <= index:
            raise ValueError(f"{result.method}: keep the maps of image {index} (`keep`)")
        show_image(row[0], image)
        row[0].set_ylabel(names.get(result.method, result.method), fontsize=8)
        row[0].set_axis_on()
        row[0].set_xticks([])
        row[0].set_yticks([])
        for ax, m in zip(row[1:], result.maps[:, index], strict=True):
            draw_map(ax, image, m, ABSOLUTE)
    for j, name in enumerate(("trained", *steps)):
        axes[0, j + 1].set_title(shorten(name, 20), fontsize=7, rotation=45, loc="left")
    axes[0, 0].set_title("image", fontsize=7)
    add_colorbar(fig, list(axes[:, -1]), ABSOLUTE, label="|map| / clip")
    title_figure(fig, title or f"cascading randomisation, {results[0].order.replace('_', ' ')}")
    return fig


def draw_similarity(
    results: Sequence[Randomisation], names: dict[str, str], title: str = ""
) -> Figure:
    """One panel per measure: for each method, the similarity of its maps to the trained
    network's as the layers are randomised (the median over images, the interquartile
    range shaded), 1 at the trained network."""
    measures = list(results[0].similarity)
    steps = results[0].layers
    panel = min(6.0, max(3.6, 0.3 * len(steps) + 1.6))
    fig = Figure(figsize=(panel * len(measures) + 1.8, 4.4))
    axes = fig.subplots(1, len(measures), squeeze=False)[0]
    x = np.arange(len(steps) + 1)
    for ax, measure in zip(axes, measures, strict=True):
        for i, result in enumerate(results):
            values = result.similarity[measure].double().numpy()  # [layers, N]
            with np.errstate(all="ignore"):
                mid = np.concatenate([[1.0], np.nanmedian(values, 1)])
                low = np.concatenate([[1.0], np.nanpercentile(values, 25, 1)])
                high = np.concatenate([[1.0], np.nanpercentile(values, 75, 1)])
            colour = f"C{i % 10}"
            ax.plot(x, mid, marker="o", markersize=3, color=colour, linewidth=1.4,
                    label=names.get(result.method, result.method))  # fmt: skip
            ax.fill_between(x, low, high, color=colour, alpha=0.12, linewidth=0)
        ax.set_xticks(x)
        ax.set_xticklabels(["trained", *[shorten(s, 20) for s in steps]], rotation=60,
                           ha="right", fontsize=7)  # fmt: skip
        ax.axhline(0, color="0.5", linewidth=0.8, linestyle=":")
        ax.set_ylim(-0.3 if measure != "ssim" else -0.1, 1.05)
        ax.set_ylabel(MEASURE_NAMES.get(measure, measure))
        ax.set_title(f"{MEASURE_NAMES.get(measure, measure)}: lower passes", fontsize=9)
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center right", fontsize=8, frameon=False)
    order = results[0].order.replace("_", " ")
    title_figure(fig, title or f"similarity to the trained network's maps, {order}")
    fig.tight_layout(rect=(0, 0, 1 - 1.7 / (panel * len(measures) + 1.8), 1))
    return fig


__all__ = ["ABSOLUTE", "MEASURE_NAMES", "draw_cascade", "draw_similarity"]
