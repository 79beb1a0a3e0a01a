"""Every kind of figure convlens draws, for the shipped fashion-cnn and a random-weight
resnet18, into one folder: filters, unit maps, region match, CAMs, each pixel method in
each sign mode, ablation, fewest units, the dissection summary and a unit strip of the
atlas, feature visualisation and its check, and faithfulness curves.

    uv run python benchmarks/gallery.py --out docs/gallery            # about 3 min, 2 cores
    uv run python benchmarks/gallery.py --out /tmp/g --quick          # fashion-cnn only

docs/gallery.md shows the result; tests/render/test_heatmaps.py draws the quick gallery and
checks that no figure has a blank band. The training and sweep figures are drawn from a
real sweep's results (docs/experiments.md, `convlens plot`), which this script does not
rerun.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
import torchvision

from convlens import models
from convlens.core.hooks import conv_layer_names
from convlens.data import fashion_mnist as fm
from convlens.data.images import Preprocessing, to_display
from convlens.data.sources import TensorSource
from convlens.interpret import ablation, filters, units
from convlens.interpret.dissect import dissect
from convlens.interpret.faithfulness import score_methods
from convlens.interpret.heads import find_gap_head
from convlens.interpret.maps import registry
from convlens.interpret.objectives import channel
from convlens.interpret.visualize import VisualizeSettings, visualize
from convlens.render import atlas, figure, heatmaps, map_figures, unit_figures
from convlens.render.heatmaps import MapStyle

Drawn = Iterator[tuple[str, figure.Figure]]


def fashion_cnn(quick: bool) -> tuple[str, torch.nn.Module, Preprocessing, torch.Tensor]:
    loaded = models.load("fashion-cnn")
    test = fm.load_fashion_mnist("test")
    x = fm.to_float(test.images[: 2 if quick else 3])
    return "fashion-cnn", loaded.model, loaded.preprocessing, x


def random_resnet18() -> tuple[str, torch.nn.Module, Preprocessing, torch.Tensor]:
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval()
    p = Preprocessing(channels=3, size=112, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    # two plain synthetic pictures (a disc on a gradient; stripes), so the maps can be read
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 112), torch.linspace(0, 1, 112), indexing="ij")
    disc = ((xx - 0.6) ** 2 + (yy - 0.4) ** 2 < 0.05).float()
    first = torch.stack([0.3 + 0.6 * disc, 0.2 + 0.5 * xx, 0.4 * yy + 0.3 * disc])
    stripes = (torch.sin(xx * 25 + yy * 10) > 0).float()
    second = torch.stack([0.2 + 0.6 * stripes, 0.5 * yy + 0.2, 0.7 - 0.4 * stripes])
    mean, std = torch.tensor(p.mean)[:, None, None], torch.tensor(p.std)[:, None, None]
    x = (torch.stack([first, second]) - mean) / std
    return "resnet18 (random weights)", model, p, x


def figures(
    name: str, model: torch.nn.Module, p: Preprocessing, x: torch.Tensor, quick: bool
) -> Drawn:
    """Each figure of one model, named."""
    shown = [to_display(xi, p) for xi in x]
    classes = list(fm.CLASSES) if p.channels == 1 else [f"class {k}" for k in range(10)]
    first = conv_layer_names(model)[0]
    yield "filters", unit_figures.draw_filters(filters.filter_tiles(model, first))
    mid = conv_layer_names(model)[len(conv_layer_names(model)) // 2]
    yield "filters-mid", unit_figures.draw_filters(filters.filter_tiles(model, mid, max_filters=12))
    head = find_gap_head(model, x[:1])
    layer = head.layer
    top = units.top_units(model, x[:1], layer, 6).units[0].tolist()
    um = units.unit_maps(model, x[:1], layer, top)
    yield (
        "units",
        unit_figures.draw_unit_maps(
            shown[0], um.upsampled[0], um.units, um.peaks[0].tolist(), f"{name}: {layer}, top units"
        ),
    )
    h, w = x.shape[2:]
    region = torch.zeros(h, w, dtype=torch.bool)
    region[h // 4 : h // 2, w // 4 : 3 * w // 4] = True
    match = units.match_region(model, x[:1], layer, region)
    yield "region", unit_figures.draw_region_match(
        shown[0], region, match.units[:5].tolist(), match.iou[:5].tolist(), match.masks[:5],
        f"{name}: units matching the region",
    )  # fmt: skip
    cams = registry.class_maps(model, x, top=3)
    labels = [[classes[c] for c in row.tolist()] for row in cams.class_indices]
    names = [f"image {i}" for i in range(len(x))]
    yield (
        "cam",
        map_figures.draw_class_maps(shown, cams.upsampled, labels, names, f"{name}: CAM, top 3"),
    )
    every = registry.every_method(model, x)
    maps = torch.stack([r.upsampled[:, 0] for r in every.values()], 1)
    shown_names = [registry.display_names()[m] for m in every]
    yield (
        "cam-family",
        map_figures.draw_class_maps(
            shown, maps, [shown_names] * len(x), names, f"{name}: the CAM family, top class"
        ),
    )
    yield from pixel_figures(name, model, x, shown)
    c = int(cams.class_indices[0, 0])
    chosen = ablation.units_by_fc_weight(head, c, 3)
    result = ablation.ablate(model, x[:1], layer, chosen)
    up = units.upsample(result.maps, (h, w))[0]
    yield "ablation", unit_figures.draw_ablation(
        shown[0], up, chosen, classes, result.probs_before[0], result.probs_after[0],
        f"{name}: ablating {len(chosen)} units of {layer}",
    )  # fmt: skip
    fewest = ablation.fewest_units(model, x[:1], layer, budget=10.0)
    if fewest.found:
        up = units.upsample(units.feature_maps(model, x[:1], layer)[:, list(fewest.units)], (h, w))
        yield "fewest-units", unit_figures.draw_ablation(
            shown[0], up[0], list(fewest.units), classes, result.probs_before[0],
            torch.softmax(fewest.logits_after, 0), f"{name}: the fewest units that change "
            f"the top-1 ({len(fewest.units)})",
        )  # fmt: skip
    v = visualize(model, channel(layer, top[:4]), p, VisualizeSettings(32 if quick else 128))
    yield "visualize", unit_figures.draw_visualization_grid(v, f"{name}: {layer}, images optimised")
    yield "visualize-check", unit_figures.draw_visualization_sanity(v, f"{name}: {layer}")
    yield from dataset_figures(name, model, p, x, layer, quick)


def pixel_figures(
    name: str, model: torch.nn.Module, x: torch.Tensor, shown: list[torch.Tensor]
) -> Drawn:
    """Each pixel method's map of the top class in each sign mode."""
    for method in registry.names(registry.PIXEL):
        result = registry.class_maps(model, x[:2], top=1, method=method)
        signed = result.maps[:, :1].expand(-1, len(heatmaps.SIGNS), -1, -1)
        styles = [MapStyle(sign=s) for s in heatmaps.SIGNS]
        own = registry.method(method).sign
        labels = [[f"{s}{' (default)' if s == own else ''}" for s in heatmaps.SIGNS]] * 2
        yield f"pixel-{method}", map_figures.draw_class_maps(
            shown[:2], signed, labels, ["image 0", "image 1"],
            f"{name}: {registry.method(method).display} of the top class in each sign mode",
            styles,
        )  # fmt: skip


def dataset_figures(
    name: str, model: torch.nn.Module, p: Preprocessing, x: torch.Tensor, layer: str, quick: bool
) -> Drawn:
    """Figures over a data set: faithfulness curves, the dissection's summary and atlas."""
    if p.channels == 1:
        test = fm.load_fashion_mnist("test")
        n = 64 if quick else 256
        images, labels = fm.to_float(test.images[:n]), test.labels[:n]
        classes: tuple[str, ...] = tuple(fm.CLASSES)
    else:
        g = torch.Generator().manual_seed(2)
        n = 32
        images = torch.randn(n, *x.shape[1:], generator=g)
        labels, classes = torch.randint(0, 10, (n,), generator=g), tuple(map(str, range(10)))
    methods = ["gradcam", "layercam", "saliency", "random", "edges"]
    scores = score_methods(model, images.split(32), methods, progress=False)
    yield "faithfulness", map_figures.draw_faithfulness(scores, f"{name}: deletion and insertion")
    source = TensorSource(images, labels, classes, p)
    d = dissect(model, source, layer, progress=False)
    summary = atlas.summary_figure(d)
    if summary is not None:
        yield "dissection-summary", summary
    with tempfile.TemporaryDirectory() as tmp:
        folder = atlas.write_atlas(d, source, Path(tmp) / "atlas", name, progress=False)
        busiest = int(d.top_score[:, 0].argmax())  # the unit with the highest activation
        strip = atlas.strip_file(folder.parent, busiest)
        if strip is not None:
            yield "atlas-strip", _picture(strip)


def _picture(path: Path) -> figure.Figure:
    from PIL import Image

    im = Image.open(path)
    fig = figure.Figure(figsize=(im.width / 100, im.height / 100), layout="constrained")
    ax = fig.subplots()
    ax.imshow(im)
    ax.set_axis_off()
    return fig


def draw_gallery(out: Path, quick: bool = False, suffix: str = "png", dpi: int = 110) -> list[Path]:
    """Draw every figure into ``out`` as ``MODEL-KIND.SUFFIX``; returns the files."""
    out.mkdir(parents=True, exist_ok=True)
    makers: list[Callable[[], tuple[str, torch.nn.Module, Preprocessing, torch.Tensor]]] = [
        lambda: fashion_cnn(quick)
    ]
    if not quick:
        makers.append(random_resnet18)
    written = []
    for make in makers:
        name, model, p, x = make()
        slug = name.split()[0]
        for kind, fig in figures(name, model, p, x, quick):
            written.append(figure.save_figure(fig, out / f"{slug}-{kind}.{suffix}", dpi))
            print(f"wrote {written[-1]}", flush=True)
    return written


CAPTIONS = {
    "filters": "kernels of the first convolution (`convlens filters`)",
    "filters-mid": "kernels of a middle convolution, one grey tile per input channel",
    "units": "the most active units' maps over the image, each by its own peak "
    "(`convlens units --top`)",
    "region": "units whose thresholded map best matches a region (`convlens units --region`)",
    "cam": "CAM of the top 3 classes, min-max scaled (`convlens cam`)",
    "cam-family": "every CAM method for the top class (`convlens cam --method all`)",
    "ablation": "the units with the largest FC weight for the top class removed "
    "(`convlens ablate --top`)",
    "fewest-units": "the fewest units whose removal changes the top-1 "
    "(`convlens ablate --min-units`)",
    "visualize": "images optimised for the most active units (`convlens visualize`)",
    "visualize-check": "their activation against the data set's maximum, and the "
    "objective during the optimisation",
    "faithfulness": "deletion and insertion curves (`convlens faithfulness`)",
    "dissection-summary": "units by the class they respond to most (`convlens dissect`)",
    "atlas-strip": "one unit's top images with its region outlined, as on its atlas card",
}


def write_page(page: Path, written: list[Path]) -> None:
    """``page``: a Markdown page showing every figure of ``written`` with its caption."""
    lines = [
        "# Gallery",
        "",
        "Every kind of figure convlens draws, for the shipped `fashion-cnn` and a "
        "random-weight resnet18 (112 px), drawn by one committed command:",
        "",
        "```",
        "uv run python benchmarks/gallery.py --out docs/gallery",
        "```",
        "",
        "Pixel attributions are drawn in each sign mode (`--sign` on `convlens cam`, a "
        "menu in the explorer): *all* on a diverging colormap whose centre is zero, "
        "*positive*, *negative* and *absolute* on sequential ones, each clipped at the "
        "top 2% of the total |attribution| as captum does; the image shows unchanged "
        "where the attribution is zero. CAMs are min-max scaled on `jet`. The training "
        "and sweep figures are in [experiments](experiments.md).",
    ]
    for model in ("fashion-cnn", "resnet18"):
        shown = [p for p in written if p.name.startswith(model + "-")]
        if shown:
            lines += ["", f"## {model}"]
        for path in shown:
            kind = path.stem[len(model) + 1 :]
            caption = CAPTIONS.get(kind)
            if caption is None and kind.startswith("pixel-"):
                method = registry.method(kind[len("pixel-") :])
                caption = (
                    f"{method.display} of the top class in each sign mode, its own "
                    f"({method.sign}) marked (`convlens cam --method {method.name} --sign`)"
                )
            rel = path.relative_to(page.parent)
            lines += ["", f"![{kind}]({rel})", "", f"*{caption or kind}*"]
    page.write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("docs/gallery"))
    parser.add_argument("--quick", action="store_true", help="fashion-cnn only, fewer images")
    parser.add_argument("--format", default="png", choices=("png", "svg", "pdf"))
    args = parser.parse_args()
    if args.out.exists() and not args.quick:
        shutil.rmtree(args.out)
    written = draw_gallery(args.out, args.quick, args.format)
    if not args.quick:
        write_page(args.out.parent / f"{args.out.name}.md", written)


if __name__ == "__main__":
    main()
