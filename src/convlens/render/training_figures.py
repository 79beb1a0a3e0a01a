"""Figures of training runs and sweeps: learning curves and accuracy against each
hyperparameter."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from convlens.core.fileio import atomic_write_bytes
from convlens.render.figure import (
    Figure,
    save_figure,
)
from convlens.sweep.results import SweepResults, is_log_scale, results_table
from convlens.sweep.spec import format_value, point_key

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


__all__ = [
    "draw_learning_curves",
    "draw_run_curves",
    "draw_sweep_param",
    "write_sweep_figures",
]
