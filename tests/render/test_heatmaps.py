"""The one attribution renderer (convlens.render.heatmaps): known pixels, captum's
numbers, every figure drawn through it, and figures written as PNG, SVG and PDF."""

from __future__ import annotations

import io
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch
from captum.attr._utils.visualization import _normalize_attr

import convlens
from convlens import models
from convlens.cli import main
from convlens.interpret.maps import pixel, registry
from convlens.render import figure, heatmaps, map_figures
from convlens.render.heatmaps import MapStyle
from tests.helpers import needs_fashion, one_error_line

SRC = Path(convlens.__file__).parent


def signed_map() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(16, 16, generator=g)
    a[:4] = 0.0  # a band of zero attribution
    a[8, 8] = 40.0  # an outlier
    return a


def test_zero_is_the_diverging_colormaps_centre_in_all_mode() -> None:
    a = signed_map()
    style = MapStyle(sign="all")
    rgba = heatmaps.map_rgba(a, style)
    centre = np.asarray(matplotlib.colormaps[heatmaps.COLORMAPS["all"]](0.5))
    assert np.array_equal(rgba[:4, :, :3], np.broadcast_to(centre[:3], (4, 16, 3)))
    assert (rgba[:4, :, 3] == 0).all()  # and transparent: the image shows unchanged
    image = torch.rand(1, 16, 16)
    blended = heatmaps.overlay(image, a, style)
    grey = image[0, :4].numpy()
    assert np.allclose(blended[:4], np.stack([heatmaps.DIM[0] + heatmaps.DIM[1] * grey] * 3, -1))


def test_the_clip_value_maps_to_the_colormaps_end() -> None:
    a = signed_map()
    for p in (0.0, 2.0, 10.0):
        t = heatmaps.clip_value(a.numpy(), p)
        # the smallest |a| whose sorted cumulative sum reaches 100 - p % of the total
        sorted_abs = np.sort(np.abs(a.numpy()).ravel())
        sums = np.cumsum(sorted_abs)
        assert sums[sorted_abs <= t][-1] >= (100 - p) / 100 * sums[-1]
        assert sums[sorted_abs < t][-1] < (100 - p) / 100 * sums[-1]
        scaled = heatmaps.scale_attribution(a, "all", p)
        at_t = np.isclose(np.abs(a.numpy()), t)
        assert np.allclose(np.abs(scaled[at_t]), 1.0)
        assert (np.abs(scaled) <= 1).all()
        # the value at the clip is the colormap's end colour
        rgba = heatmaps.map_rgba(a, MapStyle(sign="all", outlier_percentile=p))
        y, x = np.argwhere(at_t & (a.numpy() > 0))[0]
        end = matplotlib.colormaps[heatmaps.COLORMAPS["all"]](1.0)
        assert np.allclose(rgba[y, x, :3], end[:3])
    # p = 0 keeps every value: the largest |a| is the clip
    assert heatmaps.clip_value(a.numpy(), 0.0) == pytest.approx(40.0)
    # the outlier holds about a fifth of the total: clipping 25% of the mass cuts it
    assert heatmaps.clip_value(a.numpy(), 25.0) < 40.0 == heatmaps.clip_value(a.numpy(), 2.0)


def test_absolute_of_minus_a_equals_that_of_a() -> None:
    a = signed_map()
    style = MapStyle(sign="absolute")
    assert np.array_equal(heatmaps.map_rgba(a, style), heatmaps.map_rgba(-a, style))
    # and negative mode of a is positive mode of -a
    assert np.array_equal(
        heatmaps.scale_attribution(a, "negative"), heatmaps.scale_attribution(-a, "positive")
    )


def test_an_all_zero_map_draws_nothing() -> None:
    rgba = heatmaps.map_rgba(torch.zeros(5, 5), MapStyle(sign="all"))
    assert (rgba[..., 3] == 0).all()


@needs_fashion
def test_the_same_numbers_as_captum_on_integrated_gradients() -> None:
    from convlens.data import fashion_mnist as fm

    test = fm.load_fashion_mnist("test")
    model = models.load("fashion-cnn").model
    x = fm.to_float(test.images[:3])
    raw = pixel.attribute(model, x, "integratedgradients").attributions  # [3, 1, 28, 28]
    for i in range(3):
        hwc = raw[i].permute(1, 2, 0).numpy()  # captum's layout, summed over channels
        for sign in ("all", "positive", "negative", "absolute"):
            for p in (2, 5):
                theirs = _normalize_attr(hwc.sum(2), "absolute_value" if sign == "absolute"
                                         else sign, p)  # fmt: skip
                ours = heatmaps.scale_attribution(raw[i].sum(0), sign, p)
                np.testing.assert_allclose(ours, theirs, atol=1e-6, rtol=0)


def test_each_method_has_a_style_from_the_registry() -> None:
    for row in registry.METHODS:
        style = MapStyle.for_method(row.name)
        if row.family == registry.CAM:
            assert style.scale == "minmax" and style.colormap.name == heatmaps.CAM_COLORMAP
        else:
            assert style.scale == "clip" and style.sign == row.sign
    assert MapStyle.for_method("saliency").sign == "absolute"
    assert MapStyle.for_method("integratedgradients").sign == "all"
    assert MapStyle.for_method("inputxgradient", sign="positive").sign == "positive"
    with pytest.raises(ValueError, match="unknown sign mode 'both'"):
        MapStyle(sign="both")
    with pytest.raises(ValueError, match="outlier percentile"):
        MapStyle(outlier_percentile=100)


COLOURING = re.compile(r"colormaps\[|cmap=|get_cmap|\bjet\b|RdBu|viridis")
# colour outside the renderer: grayscale images and filters, and line colours of the
# faithfulness curves; no map is coloured anywhere else
ALLOWED = {'cmap="gray"', 'colormaps["tab20"]'}


def test_no_other_module_colours_a_map() -> None:
    found = []
    for path in SRC.rglob("*.py"):
        if path.name == "heatmaps.py":
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            for allowed in ALLOWED:  # what is left of the line must colour nothing
                code = code.replace(allowed, "")
            if COLOURING.findall(code):
                found.append(f"{path.relative_to(SRC)}:{n}: {line.strip()}")
    assert not found, "\n".join(found)


def tiny_figure() -> figure.Figure:
    x = torch.rand(2, 1, 20, 20)
    maps = torch.randn(2, 3, 20, 20)
    styles = [MapStyle(sign=s) for s in ("all", "positive", "absolute")]
    return map_figures.draw_class_maps(
        list(x), maps, [["a", "b", "c"]] * 2, ["x", "y"], "t", styles
    )


def test_figures_as_png_svg_and_pdf(tmp_path: Path) -> None:
    fig = tiny_figure()
    for suffix in ("png", "svg", "pdf"):
        figure.save_figure(fig, tmp_path / f"f.{suffix}", dpi=72)
    check_figure_files(tmp_path / "f.png", tmp_path / "f.svg", tmp_path / "f.pdf")


def check_figure_files(*paths: Path) -> None:
    """Each file opens as what its suffix says: a PNG image, an SVG that parses as XML
    with an <svg> root, a PDF with its header, trailer and at least one page."""
    from PIL import Image

    for path in paths:
        data = path.read_bytes()
        if path.suffix == ".png":
            assert Image.open(io.BytesIO(data)).size[0] > 10
        elif path.suffix == ".svg":
            root = ET.fromstring(data)
            assert root.tag.endswith("svg")
        else:
            assert data.startswith(b"%PDF-") and data.rstrip().endswith(b"%%EOF")
            pages = len(re.findall(rb"/Type\s*/Page[^s]", data))
            assert pages == 1, pages


@needs_fashion
@pytest.mark.parametrize("suffix", ["svg", "pdf", "png"])
def test_cam_units_and_ablate_write_svg_and_pdf(tmp_path: Path, suffix: str) -> None:
    outs = [tmp_path / f"{name}.{suffix}" for name in ("cam", "ig", "units", "ablate")]
    assert main(["cam", "fashion-cnn", "test:0", "--top", "2", "--out", str(outs[0])]) == 0
    assert (
        main(
            [
                "cam",
                "fashion-cnn",
                "test:0",
                "--method",
                "integratedgradients",
                "--top",
                "1",
                "--sign",
                "positive",
                "--out",
                str(outs[1]),
                "--dpi",
                "80",
            ]
        )
        == 0
    )
    assert main(["units", "fashion-cnn", "test:0", "--layer", "features", "--top", "3",
                 "--out", str(outs[2])]) == 0  # fmt: skip
    assert main(["ablate", "fashion-cnn", "test:0", "--units", "1", "2", "--out",
                 str(outs[3])]) == 0  # fmt: skip
    check_figure_files(*outs)


def test_bad_figure_options_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cam", "fashion-cnn", "test:0", "--out", "cam.jpg"]) == 2
    assert "write a figure as .png, .svg, .pdf" in one_error_line(capsys)
    assert main(["cam", "fashion-cnn", "test:0", "--dpi", "0"]) == 2
    assert "--dpi must be in 10..1200" in one_error_line(capsys)
    assert main(["cam", "fashion-cnn", "test:0", "--sign", "all"]) == 2
    assert "--sign draws pixel attributions" in one_error_line(capsys)


def longest_blank_band(path: Path) -> tuple[float, float]:
    """The longest run of rows (and of columns) of plain background inside the figure,
    as a fraction of its height (width); the outer margin is left out."""
    from PIL import Image

    a = np.asarray(Image.open(path).convert("RGB")).astype(int)
    plain = np.abs(a - a[0, 0]).sum(2) == 0

    def longest(uniform: np.ndarray) -> int:
        inside = np.nonzero(~uniform)[0]
        if len(inside) == 0:
            return 0
        best = run = 0
        for u in uniform[inside[0] : inside[-1] + 1]:
            run = run + 1 if u else 0
            best = max(best, run)
        return best

    return longest(plain.all(1)) / a.shape[0], longest(plain.all(0)) / a.shape[1]


@needs_fashion
@pytest.mark.slow
def test_no_gallery_figure_has_a_blank_band(tmp_path: Path) -> None:
    from benchmarks.gallery import draw_gallery

    written = draw_gallery(tmp_path, quick=True)
    kinds = {p.stem.split("-", 2)[-1] for p in written}
    assert {"filters", "units", "region", "cam", "cam-family", "ablation", "visualize",
            "faithfulness", "dissection-summary", "atlas-strip"} <= kinds  # fmt: skip
    assert {f"pixel-{m}" for m in registry.names(registry.PIXEL)} <= kinds
    wide = {p.name: longest_blank_band(p) for p in written}
    assert all(max(b) <= 0.08 for b in wide.values()), wide


@pytest.mark.slow
def test_the_report_says_how_each_map_is_drawn_and_writes_svg_and_pdf(tmp_path: Path) -> None:
    from convlens.data import images
    from convlens.render import report

    loaded = models.load("fashion-cnn")
    g = torch.Generator().manual_seed(0)
    inputs = images.Inputs(torch.randn(1, 1, 28, 28, generator=g), ("noise",), ((28, 28),))
    opts = report.ReportOptions(visualize_steps=8, figure_formats=("svg", "pdf"), dpi=60)
    page = report.build_report(loaded, inputs, tmp_path / "rep", opts, progress=False)
    text = page.read_text()
    # each map of the CAM-and-pixels figure in its own style, said under the figure
    assert "Saliency: absolute values, clipped at the top 2% of |attribution|" in text
    assert "Integrated Gradients: both signs" in text and "CAM: min-max scaled" in text
    # one grey channel: no colour decorrelation claimed
    assert "decorrelated colour" not in text and "no colour to decorrelate" in text
    pngs = re.findall(r'<img src="([^"]+)\.png"', text)
    assert "cam-and-pixels" in pngs
    for name in pngs:
        if (page.parent / f"{name}.svg").exists():  # written by the report, not copied in
            check_figure_files(page.parent / f"{name}.svg", page.parent / f"{name}.pdf")
            assert f'href="{name}.pdf"' in text
    assert (page.parent / "cam-and-pixels.pdf").exists()
    with pytest.raises(ValueError, match="svg or pdf besides png"):
        report.build_report(loaded, inputs, tmp_path / "bad",
                            report.ReportOptions(figure_formats=("jpg",)))  # fmt: skip
