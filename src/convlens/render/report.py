"""A browsable HTML report of every answer of the problem set for one model and a few
images: ``index.html`` plus its PNG figures in one folder, openable offline.

The analysis calls are the same public functions the CLI and a notebook use; this
module only arranges their results into a page.
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from matplotlib.figure import Figure

from convlens.core.fileio import atomic_write_bytes
from convlens.core.hooks import activations, conv_layer_names, list_layers
from convlens.core.progress import progress_bar
from convlens.data import images
from convlens.interpret import ablation, filters, units
from convlens.interpret.concepts.discover import concept_maps
from convlens.interpret.faithfulness import MethodScore
from convlens.interpret.heads import GapHead, NotGapHeadError, find_gap_head, last_conv_module
from convlens.interpret.maps import registry
from convlens.interpret.objectives import channel
from convlens.interpret.visualize import VisualizeSettings, visualize
from convlens.models import LoadedModel
from convlens.render import (
    atlas,
    concept_figures,
    concept_pages,
    figure,
    heatmaps,
    map_figures,
    training_figures,
    unit_figures,
)
from convlens.sweep import results as sweep_results


@dataclass
class _Section:
    anchor: str
    title: str
    blocks: list[str] = field(default_factory=list)


@dataclass
class ReportOptions:
    """What to show; every field has a sensible default."""

    layer: str | None = None  # unit/ablation layer [the layer feeding global pooling]
    units: Sequence[int] = ()  # units whose maps to show [the first 6]
    top_units: int = 6
    ablate_top: int = 3  # ablate the units with the largest FC weight for the top class
    region: torch.Tensor | None = None  # [H, W] bool mask in model-input pixels
    run_dir: Path | None = None  # learning curves of this training run
    sweep_dir: Path | None = None  # hyperparameter figures of this sweep
    test_top1: float | None = None  # measured test top-1, shown in the summary
    # faithfulness of each CAM method over a data set (interpret.faithfulness.score_methods)
    faithfulness: Sequence[MethodScore] = ()
    faithfulness_data: str = ""  # what the scores were measured on, for the caption
    dissection: Path | None = None  # a `convlens dissect` atlas folder to summarise
    concepts: Path | None = None  # a `convlens concepts` folder: maps of the top class's
    visualize_steps: int = 256  # feature visualisation of the most active units [0: none]
    # pixel attributions drawn beside the CAM of the top class (any map method)
    methods: Sequence[str] = registry.REPORT_METHODS
    # each figure also as these files beside its PNG, for a paper (svg, pdf)
    figure_formats: Sequence[str] = ()
    dpi: int = 110  # of the PNGs and of the images inside SVG and PDF files


class Report:
    """Collects sections and figures and writes them as one page."""

    def __init__(self, out: Path, title: str, formats: Sequence[str] = (), dpi: int = 110) -> None:
        self.out = out
        self.title = title
        self.formats = tuple(formats)
        self.dpi = dpi
        self.sections: list[_Section] = []
        self.figures: list[str] = []

    def section(self, anchor: str, title: str) -> _Section:
        s = _Section(anchor, title)
        self.sections.append(s)
        return s

    def figure(
        self, section: _Section, fig: Figure, name: str, caption: str, width: int = 900
    ) -> None:
        path = figure.save_figure(fig, self.out / f"{name}.png", dpi=self.dpi)
        for fmt in self.formats:  # the same figure for a paper, linked under it
            figure.save_figure(fig, self.out / f"{name}.{fmt}", dpi=self.dpi)
        links = " ".join(f'<a href="{html.escape(name)}.{fmt}">{fmt.upper()}</a>'
                         for fmt in self.formats)  # fmt: skip
        self.figure_file(section, path.name, caption, width, links)

    def figure_file(
        self, section: _Section, name: str, caption: str, width: int = 900, links: str = ""
    ) -> None:
        """An image already written into the report folder as ``name``; ``links``: HTML
        after the caption (the figure's other formats)."""
        self.figures.append(name)
        section.blocks.append(
            f'<figure><img src="{html.escape(name)}" alt="{html.escape(caption)}" '
            f'style="max-width:min(100%,{width}px)"><figcaption>{html.escape(caption)}'
            f"{' ' + links if links else ''}</figcaption></figure>"
        )

    def text(self, section: _Section, text: str) -> None:
        section.blocks.append(f"<p>{html.escape(text)}</p>")

    def table(
        self, section: _Section, header: Sequence[str], rows: Sequence[Sequence[Any]]
    ) -> None:
        head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>"
            for row in rows
        )
        section.blocks.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")

    def write(self) -> Path:
        toc = "".join(
            f'<li><a href="#{s.anchor}">{html.escape(s.title)}</a></li>' for s in self.sections
        )
        body = "".join(
            f'<section id="{s.anchor}"><h2>{html.escape(s.title)}</h2>{"".join(s.blocks)}</section>'
            for s in self.sections
        )
        page = _PAGE.format(title=html.escape(self.title), toc=toc, body=body)
        path = self.out / "index.html"
        atomic_write_bytes(path, page.encode())
        return path


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
body {{ font: 15px/1.5 system-ui, sans-serif; margin: 0 auto; max-width: 1000px;
       padding: 1.5rem; color: #222; }}
h1 {{ font-size: 1.6rem; margin-bottom: .2rem; }}
h2 {{ border-bottom: 1px solid #ddd; padding-bottom: .2rem; margin-top: 2.2rem; }}
nav ol {{ columns: 2; }}
figure {{ margin: 1rem 0; }}
img {{ display: block; height: auto; border: 1px solid #eee; }}
figcaption {{ color: #555; font-size: .9rem; margin-top: .3rem; }}
table {{ border-collapse: collapse; margin: .8rem 0; font-size: .9rem; }}
th, td {{ border: 1px solid #ddd; padding: .25rem .6rem; text-align: left; }}
th {{ background: #f5f5f5; }}
code {{ background: #f5f5f5; padding: 0 .2rem; }}
</style></head>
<body><h1>{title}</h1>
<p>Written by <code>convlens report</code>. Every figure is a PNG next to this page.</p>
<nav><h2>Contents</h2><ol>{toc}</ol></nav>
{body}
</body></html>
"""


@dataclass(frozen=True)
class ReportContext:
    """What every section reads: the model, the images, and what is computed once."""

    loaded: LoadedModel
    inputs: images.Inputs
    options: ReportOptions
    shown: list[torch.Tensor]  # the images for display, values in [0, 1]
    head: GapHead | None  # the GAP + linear head, when the model has one
    layer: str  # the layer for units and ablation
    probs: torch.Tensor  # [N, classes]


def report_context(
    loaded: LoadedModel, inputs: images.Inputs, options: ReportOptions
) -> ReportContext:
    """Find the head and the layer, and run the model once."""
    model, x = loaded.model, inputs.x
    head: GapHead | None
    try:
        head = find_gap_head(model, x)
    except NotGapHeadError:
        head = None
    layer = options.layer or (head.layer if head else last_conv_module(model, x))
    logits, _ = activations(model, x, layer)
    shown = [images.to_display(xi, loaded.preprocessing) for xi in x]
    return ReportContext(loaded, inputs, options, shown, head, layer, logits.float().softmax(1))


def summary_section(report: Report, ctx: ReportContext) -> None:
    """Model facts, conv layers and the top-5 predictions per image."""
    loaded, inputs, opts, head, probs = ctx.loaded, ctx.inputs, ctx.options, ctx.head, ctx.probs
    model, x = loaded.model, inputs.x
    s = report.section("model", "Model and predictions")
    params = sum(p.numel() for p in model.parameters())
    rows: list[list[Any]] = [
        ["model", loaded.name],
        ["parameters", f"{params:,}"],
        ["classes", len(loaded.classes)],
        ["input", "x".join(map(str, x.shape[1:]))],
        ["head", f"global average pooling of {head.layer} + {head.fc}" if head else "other"],
    ]
    if opts.test_top1 is not None:
        rows.append(["test top-1 (measured now)", f"{opts.test_top1:.2%}"])
    for key, label in (
        ("epochs", "epochs trained"),
        ("val_top1", "validation top-1 (from training)"),
        ("test_top1", "test top-1 (from training)"),
    ):
        v = loaded.metrics.get(key)
        if v is not None:
            rows.append([label, f"{v:.2%}" if "top1" in key else v])
    report.table(s, ["property", "value"], rows)
    layers = list_layers(model, x[:1])
    report.text(s, f"{len(layers)} convolutional layers (output shapes for one image):")
    report.table(
        s,
        ["layer", "channels, kernel", "output"],
        [
            [
                r.name,
                f"{r.in_channels} -> {r.out_channels}, " + "x".join(map(str, r.kernel)),
                "x".join(map(str, r.output_shape))
                if r.output_shape is not None
                else "does not run in evaluation mode",
            ]
            for r in layers
        ],
    )
    top = probs.topk(min(5, probs.shape[1]), dim=1)
    report.text(s, "Top-5 predictions per image:")
    report.table(
        s,
        ["image", *[f"#{i + 1}" for i in range(top.indices.shape[1])]],
        [
            [name]
            + [
                f"{loaded.classes[c]} {p:.1%}"
                for p, c in zip(pv.tolist(), ci.tolist(), strict=True)
            ]
            for name, pv, ci in zip(inputs.names, top.values, top.indices, strict=True)
        ],
    )


def filters_section(report: Report, ctx: ReportContext) -> None:
    """Problem 1: kernels of the first and a middle conv layer."""
    model = ctx.loaded.model
    s = report.section("filters", "Problem 1: filters")
    names = conv_layer_names(model)
    picks = [names[0]] + ([names[len(names) // 2]] if len(names) > 1 else [])
    for i, name in enumerate(picks):
        tiles = filters.filter_tiles(model, name, max_filters=16 if i else 64)
        shape = "x".join(map(str, tiles.weight_shape))
        how = (
            "colour tiles, one per filter (R, G, B input channels)"
            if tiles.rgb
            else "rows: output filters, columns: input channels, each kernel in grayscale"
        )
        report.figure(
            s,
            unit_figures.draw_filters(tiles),
            f"filters-{name}",
            f"Kernels of {name} (weight {shape}), each filter min-max normalised to [0, 1]; {how}.",
            width=700,
        )


def units_section(report: Report, ctx: ReportContext) -> None:
    """Problem 2a-b: chosen and most active units, and region matching."""
    inputs, opts, shown, layer = ctx.inputs, ctx.options, ctx.shown, ctx.layer
    model, x = ctx.loaded.model, inputs.x
    s = report.section("units", "Problem 2a-b: units and their feature maps")
    chosen = list(opts.units) or list(range(opts.top_units))
    um = units.unit_maps(model, x[:1], layer, chosen)
    report.figure(
        s,
        unit_figures.draw_unit_maps(
            shown[0], um.upsampled[0], um.units, um.peaks[0].tolist(), f"{layer}: chosen units"
        ),
        "units-chosen",
        f"Feature maps of units {list(um.units)} of {layer} for {inputs.names[0]}, "
        "upsampled bilinearly to the input and overlaid (each scaled by its own peak).",
    )
    for i in range(x.shape[0]):
        idx = units.top_units(model, x[i : i + 1], layer, opts.top_units).units
        top = idx[0].tolist()
        tm = units.unit_maps(model, x[i : i + 1], layer, top)
        report.figure(
            s,
            unit_figures.draw_unit_maps(
                shown[i],
                tm.upsampled[0],
                tm.units,
                tm.peaks[0].tolist(),
                f"{layer}: most active units",
            ),
            f"units-top-{i}",
            f"The {len(top)} most active units of {layer} for {inputs.names[i]} (by mean "
            f"activation): {top}.",
        )
    if opts.region is not None:
        match = units.match_region(model, x[:1], layer, opts.region)
        k = min(6, len(match.units))
        report.figure(
            s,
            unit_figures.draw_region_match(
                shown[0],
                opts.region,
                match.units[:k].tolist(),
                match.iou[:k].tolist(),
                match.masks[:k],
                f"{layer}: units best matching the region",
            ),
            "units-region",
            f"Units of {layer} ranked by IoU between the region (white outline) and the "
            f"unit's map thresholded at its own {match.quantile} quantile (yellow).",
        )


def visualize_section(report: Report, ctx: ReportContext) -> None:
    """What the most active units of the first image respond to most: an image
    optimised for each (feature visualisation), against the report's images."""
    steps = ctx.options.visualize_steps
    if steps <= 0:
        return
    model, x, layer = ctx.loaded.model, ctx.inputs.x, ctx.layer
    chosen = units.top_units(model, x[:1], layer, ctx.options.top_units).units[0].tolist()
    s = report.section("visualize", "Problem 2: what the units respond to most")
    p = ctx.loaded.preprocessing
    v = visualize(model, channel(layer, chosen), p, VisualizeSettings(steps=steps))
    report.figure(
        s,
        unit_figures.draw_visualization_grid(v, f"{layer}: images optimised for each unit"),
        "visualize-units",
        f"For each of the {len(chosen)} most active units of {layer} for "
        f"{ctx.inputs.names[0]}, an image optimised for {steps} steps to raise the unit's "
        "mean activation (Fourier parameterisation, "
        + (
            "decorrelated colour, "
            if ctx.loaded.preprocessing.channels == 3
            else "one grey channel, so no colour to decorrelate, "
        )
        + "jitter, scale and rotation; convlens visualize). Compare with the unit maps "
        "above and, when a dissection is given, the unit's top images below.",
        width=760,
    )
    feats = units.feature_maps(model, x, layer)  # [N, C, h, w]
    on_images = feats.mean((2, 3))[:, list(v.units)].amax(0)
    rows = []
    for k, u in enumerate(v.units):
        act = "dead" if u in v.dead else f"{float(v.activation[k].mean()):.3f}"
        rows.append((u, act, f"{float(on_images[k]):.3f}"))
    report.table(s, ("unit", "mean activation, optimised image", "highest over these images"), rows)
    report.text(
        s,
        "An optimised image shows a pattern that drives the unit, not what the unit "
        "responds to in natural images: people predict a unit's behaviour better from "
        "its natural top images than from such pictures alone (Borowski et al., ICLR 2021), "
        "and the pictures can be made to mislead (Geirhos et al., 2023). Read them beside "
        "the unit's maps and top images.",
    )


def ablation_section(report: Report, ctx: ReportContext) -> None:
    """Problem 2c-d: ablating the units that weigh most, and the fewest units."""
    # Long because each image gets a figure and a table row; the work is two library calls.
    loaded, inputs, opts, shown = ctx.loaded, ctx.inputs, ctx.options, ctx.shown
    model, x, head, layer, probs = loaded.model, inputs.x, ctx.head, ctx.layer, ctx.probs
    s = report.section("ablation", "Problem 2c-d: ablating units")
    if head is None or layer != head.layer:
        report.text(
            s, "Skipped: ablation by FC weight needs the layer feeding a GAP + linear head."
        )
        return
    for i in range(x.shape[0]):
        c = int(probs[i].argmax())
        chosen = ablation.units_by_fc_weight(head, c, opts.ablate_top)
        result = ablation.ablate(model, x[i : i + 1], layer, chosen)
        up = units.upsample(result.maps, tuple(x.shape[2:]))[0]  # type: ignore[arg-type]
        before, after = result.probs_before[0], result.probs_after[0]
        report.figure(
            s,
            unit_figures.draw_ablation(
                shown[i],
                up,
                chosen,
                loaded.classes,
                before,
                after,
                f"{inputs.names[i]}: ablating {len(chosen)} units of {layer}",
            ),
            f"ablation-{i}",
            f"{inputs.names[i]}: the {len(chosen)} units of {layer} with the largest FC "
            f"weight for {loaded.classes[c]} ({chosen}) set to zero; their maps, and the "
            "class probabilities before and after.",
            width=700,
        )
        fewest = ablation.fewest_units(model, x[i : i + 1], layer)
        report.table(
            s,
            [
                "image",
                "before",
                "after ablating " + ", ".join(map(str, chosen)),
                "fewest units that change the top-1",
            ],
            [
                [
                    inputs.names[i],
                    f"{loaded.classes[c]} {float(before[c]):.1%}",
                    f"{loaded.classes[int(after.argmax())]} {float(after.max()):.1%}",
                    (
                        f"{len(fewest.units)} units {list(fewest.units)} -> "
                        f"{loaded.classes[fewest.new_class]}"
                        if fewest.found
                        else "none found"
                    ),
                ]
            ],
        )
    report.text(
        s,
        "Fewest units: exact minimum over all subsets, from the closed form "
        "(zeroing unit k moves every logit by -W[:, k] x mean(A_k)), confirmed by a real "
        "forward pass.",
    )


def cam_section(report: Report, ctx: ReportContext) -> None:
    """Problem 3: CAM (or Grad-CAM without a GAP head) of the top classes."""
    loaded, inputs, shown, head, probs = ctx.loaded, ctx.inputs, ctx.shown, ctx.head, ctx.probs
    model, x = loaded.model, inputs.x
    s = report.section("cam", "Problem 3: class activation maps")
    method = registry.DEFAULT_METHOD if head is not None else registry.GRADIENT_FALLBACK
    result = registry.class_maps(model, x, top=min(5, probs.shape[1]), method=method)
    labels = [
        [f"{loaded.classes[c]} {float(p[c]):.1%}" for c in cl.tolist()]
        for cl, p in zip(result.class_indices, result.probs, strict=True)
    ]
    name = registry.method(method).display
    report.figure(
        s,
        map_figures.draw_class_maps(
            shown,
            result.upsampled,
            labels,
            list(inputs.names),
            f"{name} of {result.layer} for the top classes",
        ),
        "cam",
        f"{name} for the top-{result.class_indices.shape[1]} classes of each image, from layer "
        f"{result.layer}"
        + (
            ": its output reshaped to (hw x c) times the FC weights gives (hw x classes)"
            if head is not None
            else ": channels weighted by the spatial mean of the class score's gradient"
        )
        + "; each map is min-max scaled and upsampled over the image.",
    )
    if ctx.options.methods:
        _maps_beside_cam(report, s, ctx, method, result.class_indices[:, :1])


def _maps_beside_cam(
    report: Report, s: _Section, ctx: ReportContext, method: str, top1: torch.Tensor
) -> None:
    """The report's other map methods beside CAM, for the top class, each drawn in its
    own style (said under the figure)."""
    loaded, inputs, shown = ctx.loaded, ctx.inputs, ctx.shown
    model, x = loaded.model, inputs.x
    methods = [method, *(m for m in ctx.options.methods if m != method)]
    drawn = [
        heatmaps.drawable(registry.class_maps(model, x, method=m, classes=top1)) for m in methods
    ]
    maps = torch.stack([m[:, 0] for m, _ in drawn], 1)
    styles = [style for _, style in drawn]
    names = [registry.display_names()[m] for m in methods]
    how = "; ".join(
        f"{name}: {style.describe()}" for name, style in zip(names, styles, strict=True)
    )
    report.figure(
        s,
        map_figures.draw_class_maps(
            shown,
            maps,
            [names] * x.shape[0],
            [
                f"{n}: {loaded.classes[int(c)]}"
                for n, c in zip(inputs.names, top1[:, 0], strict=True)
            ],
            "which region (CAM family) and which pixels (pixel attributions), top class",
            styles,
        ),
        "cam-and-pixels",
        f"The top class of each image by {', '.join(names)}: the CAM family answers "
        "which region of a layer, the pixel attributions which input pixels (their "
        f"attributions summed over the colour channels). Drawn as: {how}.",
    )


def training_section(report: Report, ctx: ReportContext) -> None:
    """Problem 4: learning curves and sweep figures, when given."""
    opts = ctx.options
    if opts.run_dir is None and opts.sweep_dir is None:
        return
    s = report.section("training", "Problem 4: training and hyperparameters")
    if opts.run_dir is not None and (opts.run_dir / "metrics.json").is_file():
        metrics = json.loads((opts.run_dir / "metrics.json").read_text())
        report.figure(
            s,
            training_figures.draw_run_curves(metrics, str(opts.run_dir)),
            "run-curves",
            "Training-set top-1 (running, with augmentation) and validation top-1 per epoch.",
            width=650,
        )
    if opts.sweep_dir is not None:
        results = sweep_results.load_results(opts.sweep_dir)
        if not results.trials:
            report.text(s, f"The sweep in {opts.sweep_dir} has no finished trials yet.")
            return
        for param in results.varied():
            report.figure(
                s,
                training_figures.draw_sweep_param(results, param),
                f"sweep-{param}",
                f"Top-1 on the training set (no augmentation) and the validation set "
                f"against {param}"
                + ("; the star is the baseline configuration." if results.baseline else "."),
                width=560,
            )
        report.figure(
            s,
            training_figures.draw_learning_curves(results),
            "sweep-curves",
            "Validation top-1 per epoch of the best trials.",
            width=760,
        )
        header, rows = sweep_results.results_rows(results)
        report.table(s, header, rows)


def trust_section(report: Report, ctx: ReportContext) -> None:
    """Which map to trust: faithfulness of every CAM method, when scores are given."""
    scores = ctx.options.faithfulness
    if not scores:
        return
    s = report.section("faithfulness", "Which map to trust: faithfulness of each method")
    header, rows = map_figures.faithfulness_table(scores)
    report.text(
        s,
        f"Measured on {scores[0].images} images of {ctx.options.faithfulness_data or 'a data set'}"
        " for each image's top-1 class. Deletion: the probability as the most salient pixels "
        "are removed (lower area is more faithful); insertion: as they are restored "
        "(higher is better); random and edges are maps that ignore the model.",
    )
    report.table(s, header, rows)
    report.figure(
        s,
        map_figures.draw_faithfulness(scores, "mean deletion and insertion curves"),
        "faithfulness",
        "Mean class probability against the fraction of pixels removed (left) or restored "
        "(right); the area under each curve is in brackets.",
        width=900,
    )


def dissection_section(report: Report, ctx: ReportContext, shown: int = 8) -> None:
    """Units across a data set: the atlas's summary and its most selective units (or
    best concept detectors), when a dissection folder is given."""
    folder = ctx.options.dissection
    if folder is None:
        return
    meta = atlas.read_atlas(folder)
    s = report.section("dissection", f"Units of {meta['layer']} across a data set")
    index = Path(os.path.relpath(Path(folder) / "index.html", report.out)).as_posix()
    report.text(
        s,
        f"{len(meta['units'])} units over {meta['images']} images of {meta['source']} "
        f"(convlens dissect; thresholds at the top {meta['quantile']:.2%} of activations). "
        f"Below, the {shown} units that respond most selectively, each with its top images "
        "(outside the yellow outline, where the unit is below its threshold, is dimmed).",
    )
    s.blocks.append(
        f'<p>The whole atlas, one card per unit: <a href="{html.escape(index)}">'
        f"{html.escape(index)}</a></p>"
    )
    if (Path(folder) / "summary.png").is_file():
        name = "dissection-summary.png"
        atomic_write_bytes(report.out / name, (Path(folder) / "summary.png").read_bytes())
        report.figure_file(s, name, "How many units respond to what.", width=760)
    best = sorted(meta["units"], key=lambda r: -atlas.unit_score(r))[:shown]
    for r in best:
        strip = atlas.strip_file(folder, r["unit"])
        if strip is None:
            continue
        name = f"dissection-unit-{r['unit']:04d}{strip.suffix}"
        atomic_write_bytes(report.out / name, strip.read_bytes())
        report.figure_file(s, name, f"unit {r['unit']}: {atlas.unit_caption(r)}")


def concepts_section(report: Report, ctx: ReportContext) -> None:
    """Where the concepts of a ``convlens concepts`` folder are in the report's images:
    for each image, the maps of its top class's three most important concepts, and the
    cards of those concepts."""
    folder = ctx.options.concepts
    if folder is None:
        return
    found, names, model = concept_pages.read_concepts(folder)
    s = report.section("concepts", f"Concepts of {found.layer}")
    report.text(
        s,
        f"{sum(len(g.bank) for g in found.groups)} concepts found by NMF in {found.layer} of "
        f"{model} (convlens concepts, {len(found.groups)} factorisation(s)); below, where the "
        "top class's most important concepts (Sobol) are in each image, and their cards.",
    )
    x = ctx.inputs.x
    top = ctx.probs.argmax(1).tolist()
    by_class = {g.group: g for g in found.groups}
    rows, captions, used = [], [], {}
    for i, c in enumerate(top):
        group = by_class.get(c, found.groups[0])
        order = group.ranking(c)[:3] if c in group.classes else list(range(3))
        maps = concept_maps(ctx.loaded.model, x[i : i + 1], found.layer, group.bank, found.shift)
        up = F.interpolate(maps[:, order], size=x.shape[-2:], mode="bilinear")
        rows.append(up[0])
        captions.append([f"{concept_pages.group_name(group.group, names)} {k}" for k in order])
        used[group.group] = group
    fig = concept_figures.draw_concept_maps(
        torch.stack(ctx.shown), torch.stack(rows), captions, "where each concept is"
    )
    caption = ("The maps of the top class's most important concepts (each by its own peak; "
               "named by the images they were found in).")  # fmt: skip
    report.figure(s, fig, "concepts-maps", caption)
    for group in used.values():
        tag = "all" if group.group is None else str(group.group)
        cards = Path(folder) / f"cards-{tag}.png"
        if cards.is_file():
            name = f"concepts-cards-{tag}.png"
            atomic_write_bytes(report.out / name, cards.read_bytes())
            report.figure_file(
                s,
                name,
                f"The concepts of {concept_pages.group_name(group.group, names)}: picture, "
                "exemplars, importance.",
            )


SECTIONS: tuple[Callable[[Report, ReportContext], None], ...] = (
    summary_section,
    filters_section,
    units_section,
    visualize_section,
    ablation_section,
    cam_section,
    trust_section,
    dissection_section,
    concepts_section,
    training_section,
)


def build_report(
    loaded: LoadedModel,
    inputs: images.Inputs,
    out: str | os.PathLike[str],
    options: ReportOptions | None = None,
    progress: bool | None = None,
) -> Path:
    """Write ``out/index.html`` with the answers for ``loaded`` on ``inputs``: one
    section per function of :data:`SECTIONS`.

    Returns:
        The path of ``index.html``.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    opts = options or ReportOptions()
    unknown = set(opts.figure_formats) - {"svg", "pdf", "png"}
    if unknown:
        raise ValueError(f"figures are written as svg or pdf besides png, not {sorted(unknown)}")
    ctx = report_context(loaded, inputs, opts)
    report = Report(out, f"convlens report: {loaded.name}", opts.figure_formats, opts.dpi)
    for section in progress_bar(SECTIONS, desc="report", unit="section", disable=progress is False):
        section(report, ctx)
    return report.write()


__all__ = [
    "SECTIONS",
    "Report",
    "ReportContext",
    "ReportOptions",
    "ablation_section",
    "build_report",
    "cam_section",
    "concepts_section",
    "dissection_section",
    "filters_section",
    "report_context",
    "summary_section",
    "training_section",
    "trust_section",
    "units_section",
    "visualize_section",
]
