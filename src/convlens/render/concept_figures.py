"""Figures of the concept analyses: TCAV's scores with their spread and their null; the
concepts found in a layer (cards of exemplars and pictures, their deletion and insertion
curves, their maps on images)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from matplotlib.patches import Rectangle

from convlens.interpret.concepts.discover import ConceptGroup, Concepts
from convlens.interpret.concepts.tcav import TCAVResult
from convlens.render.figure import Figure, show_image, title_figure
from convlens.render.heatmaps import ACTIVATIONS, by_peak, draw_map


def draw_tcav(result: TCAVResult, class_names: Sequence[str], title: str) -> Figure:
    """One panel per layer: for each class, a bar per concept (the mean sign count over
    the runs, the runs' standard deviation as an error bar) beside the random sets' score
    (grey); a star marks a concept significant after the correction, 0.5 is dashed."""
    layers = list(dict.fromkeys(s.layer for s in result.scores))
    concepts = list(dict.fromkeys(s.concept for s in result.scores))
    classes = list(dict.fromkeys(s.target for s in result.scores))
    fig = Figure(
        figsize=(max(5.0, 1.2 + 0.9 * len(classes) * (len(concepts) + 1)), 3.2 * len(layers))
    )
    axes = fig.subplots(len(layers), 1, squeeze=False)[:, 0]
    colours = [f"C{i % 10}" for i in range(len(concepts))]  # matplotlib's cycle
    width = 0.8 / (len(concepts) + 1)
    by_key = {(s.layer, s.concept, s.target): s for s in result.scores}
    for ax, layer in zip(axes, layers, strict=True):
        for j, c in enumerate(classes):
            null = by_key[(layer, concepts[0], c)].null
            ax.bar(j, np.mean(null), width, yerr=np.std(null), color="0.75", capsize=2,
                   label="random" if j == 0 else None)  # fmt: skip
            for i, concept in enumerate(concepts):
                s = by_key[(layer, concept, c)]
                x = j + (i + 1) * width
                ax.bar(x, s.sign_count, width, yerr=np.std(s.runs), color=colours[i], capsize=2,
                       label=concept if j == 0 else None)  # fmt: skip
                if s.significant:
                    top = min(1.0, s.sign_count + float(np.std(s.runs)))
                    ax.text(x, top + 0.02, "*",
                            ha="center", fontsize=11)  # fmt: skip
        ax.axhline(0.5, color="0.4", linestyle="--", linewidth=0.8)
        ax.set_xticks([j + width * len(concepts) / 2 for j in range(len(classes))])
        ax.set_xticklabels([class_names[c] if c < len(class_names) else str(c) for c in classes])
        ax.set_ylim(0, 1.1)
        ax.set_ylabel("TCAV score (sign count)")
        ax.set_title(f"layer {layer}", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=7.5, frameon=False, ncols=len(concepts) + 1, loc="upper left")
    fig.suptitle(f"{title}  (* significant, Bonferroni over {result.tests} tests)", fontsize=10)
    fig.tight_layout()
    return fig


def _class_name(c: int | None, class_names: Sequence[str]) -> str:
    if c is None:
        return "all images"
    return class_names[c] if c < len(class_names) else str(c)


def concept_order(group: ConceptGroup) -> list[int]:
    """The group's concepts, the most important first (for its class, or on average over
    the classes scored)."""
    mean = torch.nan_to_num(group.sobol).mean(0)
    return [int(i) for i in torch.argsort(mean, descending=True, stable=True)]


def draw_concept_cards(
    group: ConceptGroup,
    exemplars: torch.Tensor,
    pictures: torch.Tensor | None,
    class_names: Sequence[str],
    title: str,
) -> Figure:
    """One row per concept, the most important first: its feature visualisation (when
    ``pictures``, ``[k, c, h, w]`` in [0, 1]), then its exemplars (``[k, top, c, H, W]``
    in [0, 1]) with the region where it is strongest outlined, and its importance."""
    k, top = exemplars.shape[:2]
    lead = 1 if pictures is not None else 0
    fig = Figure(figsize=(1.05 * (top + lead) + 1.9, 1.1 * k + 0.6))
    axes = fig.subplots(k, top + lead, squeeze=False)
    for row, i in enumerate(concept_order(group)):
        if pictures is not None:
            show_image(axes[row, 0], pictures[i])
        for j in range(top):
            ax = axes[row, lead + j]
            show_image(ax, exemplars[i, j])
            y0, x0, y1, x1 = (int(v) for v in group.boxes[i, j])
            ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False,
                                   edgecolor="C1", linewidth=1.2))  # fmt: skip
        for ax in axes[row]:
            ax.set_xticks([])
            ax.set_yticks([])
        scores = ", ".join(
            f"{_class_name(c, class_names)} {group.sobol[r, i]:.2f}"
            for r, c in sorted(enumerate(group.classes), key=lambda rc: -group.sobol[rc[0], i])[:2]
        )
        last = axes[row, -1]
        last.text(1.08, 0.5, f"concept {i}\nSobol: {scores}", transform=last.transAxes,
                  va="center", fontsize=7.5)  # fmt: skip
    if pictures is not None:
        axes[0, 0].set_title("picture", fontsize=8)
    axes[0, lead].set_title("exemplars (strongest region outlined)", fontsize=8, loc="left")
    title_figure(fig, f"{title}: {_class_name(group.group, class_names)}, "
                 f"reconstruction error {group.error:.3f}", fontsize=9)  # fmt: skip
    fig.tight_layout()
    return fig


def draw_concept_curves(found: Concepts, class_names: Sequence[str], title: str) -> Figure:
    """Per scored class, C-Deletion and C-Insertion (the class's probability as the most
    important concepts are removed or added), with the first concept's direction made
    random as a control."""
    panels = [(g, r, c) for g in found.groups for r, c in enumerate(g.classes)]
    cols = min(5, len(panels))
    rows = -(-len(panels) // cols)
    fig = Figure(figsize=(2.4 * cols, 2.1 * rows + 0.5))
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, (g, r, c) in zip(axes, panels, strict=False):
        steps = np.arange(g.deletion.shape[1])
        ax.plot(steps, g.deletion[r].numpy(), color="C3", label="C-Deletion")
        ax.plot(steps, g.insertion[r].numpy(), color="C0", label="C-Insertion")
        ax.plot([1], [float(g.random_insertion[r])], "x", color="0.4", label="random direction")
        ax.set_ylim(0, 1.02)
        ax.set_title(_class_name(c, class_names), fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in axes[len(panels) :]:
        ax.set_axis_off()
    axes[0].set_ylabel("probability", fontsize=8)
    axes[-1 if len(panels) == len(axes) else len(panels) - 1].set_xlabel("concepts", fontsize=8)
    axes[0].legend(fontsize=6.5, frameon=False)
    title_figure(fig, f"{title}: concepts removed or added, most important first", fontsize=9)
    fig.tight_layout()
    return fig


def draw_concept_maps(
    images: torch.Tensor,
    maps: torch.Tensor,
    captions: Sequence[Sequence[str]],
    title: str,
) -> Figure:
    """One row per image (``[n, c, H, W]`` in [0, 1]): the image, then the maps ``[n,
    m, H, W]`` of its class's most important concepts over it (``captions[i][j]`` names
    map ``j`` of image ``i``)."""
    n, m = maps.shape[:2]
    fig = Figure(figsize=(1.5 * (m + 1), 1.55 * n + 0.4))
    axes = fig.subplots(n, m + 1, squeeze=False)
    for i in range(n):
        show_image(axes[i, 0], images[i])
        axes[i, 0].set_axis_off()
        for j in range(m):
            draw_map(axes[i, j + 1], images[i], by_peak(maps[i, j]), ACTIVATIONS)
            axes[i, j + 1].set_title(captions[i][j], fontsize=7)
    title_figure(fig, title, fontsize=9)
    fig.tight_layout()
    return fig


__all__ = [
    "concept_order",
    "draw_concept_cards",
    "draw_concept_curves",
    "draw_concept_maps",
    "draw_tcav",
]
