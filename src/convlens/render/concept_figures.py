"""Figures of the concept analyses: TCAV's scores with their spread and their null."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from convlens.interpret.concepts.tcav import TCAVResult
from convlens.render.figure import Figure


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


__all__ = ["draw_tcav"]
