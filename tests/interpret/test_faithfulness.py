"""Faithfulness metrics: equal to torchcam's on the same maps, and right by hand."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torchcam.metrics import ClassificationMetric, DeletionInsertionMetric

from convlens.cli import main
from convlens.interpret.faithfulness import baseline_image, faithfulness
from convlens.interpret.maps import cam
from tests.helpers import fashion, needs_fashion


class GivenMaps:
    """A torchcam CAM extractor that returns maps computed beforehand, so that both
    libraries score the very same maps."""

    def __init__(self, model: nn.Module, maps: torch.Tensor) -> None:
        self.model, self.maps = model, maps

    def __call__(self, class_idx: Any = None, scores: Any = None, **_: Any) -> list[torch.Tensor]:
        return [self.maps]

    def fuse_cams(self, cams: list[torch.Tensor]) -> torch.Tensor:
        return cams[0]

    @contextlib.contextmanager
    def _hooks_off(self) -> Iterator[None]:
        yield


@pytest.mark.parametrize("steps", [7, 20])
def test_equal_to_torchcam(steps: int) -> None:
    model, x, layer = fashion()
    maps = cam.GradCAM(model, layer)(x, top=1)
    ours = faithfulness(model, x, maps.upsampled[:, 0], steps=steps, batch_size=13)
    extractor = GivenMaps(model, maps.normalized[:, 0])
    softmax = partial(torch.softmax, dim=-1)
    di = DeletionInsertionMetric(extractor, softmax, steps=steps, batch_size=13)  # type: ignore[arg-type]
    di.update(x)
    theirs = di.summary()
    assert float(ours.deletion_auc.mean()) == pytest.approx(theirs["deletion_auc"], abs=1e-6)
    assert float(ours.insertion_auc.mean()) == pytest.approx(theirs["insertion_auc"], abs=1e-6)
    cm = ClassificationMetric(extractor, softmax)  # type: ignore[arg-type]
    cm.update(x)
    summary = cm.summary()
    assert float(ours.drop.mean()) == pytest.approx(summary["avg_drop"], abs=1e-6)
    assert float(ours.increase.float().mean()) == pytest.approx(summary["conf_increase"])


def test_curves_by_hand() -> None:
    """A 'model' whose class-0 logit is the sum of the four pixels: deleting the most
    salient pixel first lowers it by exactly that pixel's value."""

    class SumPixels(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            s = x.flatten(1).sum(1)
            return torch.stack([s, torch.zeros_like(s)], 1)

    x = torch.tensor([4.0, 3.0, 2.0, 1.0]).reshape(1, 1, 2, 2)
    saliency = torch.tensor([0.1, 0.9, 0.5, 0.2]).reshape(1, 2, 2)  # order: 3, 2, 1, 4
    out = faithfulness(SumPixels(), x, saliency, torch.tensor([0]), steps=4)
    kept = torch.tensor([10.0, 7.0, 5.0, 4.0, 0.0])  # pixel sums as 3, 2, 1, 4 are removed
    expected = torch.sigmoid(kept)  # softmax of (s, 0) for class 0
    torch.testing.assert_close(out.fractions, torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0]))
    torch.testing.assert_close(out.deletion[0], expected)
    inserted = torch.sigmoid(torch.tensor([0.0, 3.0, 5.0, 6.0, 10.0]))
    torch.testing.assert_close(out.insertion[0], inserted)
    assert float(out.deletion_auc[0]) == pytest.approx(float(torch.trapezoid(expected, dx=0.25)))


def test_baselines_and_bad_input() -> None:
    model, x, _ = fashion()
    for kind in ("zeros", "blur", "mean"):
        assert baseline_image(x, kind).shape == x.shape
    blurred = baseline_image(x, "blur")
    assert blurred.std() < x.std()  # a blur smooths
    with pytest.raises(ValueError, match="`baseline` must be one of"):
        baseline_image(x, "noise")
    flat = torch.zeros(4, 28, 28)  # a constant map: defined, not NaN
    out = faithfulness(model, x, flat)
    assert torch.isfinite(out.deletion_auc).all() and torch.isfinite(out.drop).all()
    with pytest.raises(ValueError, match="saliency must be"):
        faithfulness(model, x, torch.zeros(4, 7, 7))
    with pytest.raises(ValueError, match="NaN"):
        faithfulness(model, x, torch.full((4, 28, 28), float("nan")))
    with pytest.raises(ValueError, match="classes must be"):
        faithfulness(model, x, flat, torch.tensor([0, 1, 2, 99]))


@needs_fashion
def test_faithfulness_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "f"
    args = ["faithfulness", "fashion-cnn", "--limit", "12", "--batch-size", "5", "--steps", "5"]
    assert main([*args, "--methods", "cam", "gradcam", "--out", str(out)]) == 0
    rows = (out / "faithfulness.csv").read_text().splitlines()
    assert rows[0].startswith("method,images,deletion AUC,insertion AUC")
    assert sorted(r.split(",")[0] for r in rows[1:]) == ["cam", "edges", "gradcam", "random"]
    assert all(r.split(",")[1] == "12" for r in rows[1:])
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"
    capsys.readouterr()
    assert main([*args, "--data", str(tmp_path / "nowhere")]) == 2
    assert (
        "is neither a FashionMNIST split (test, train, val) nor a folder" in capsys.readouterr().err
    )
    (tmp_path / "empty").mkdir()
    assert main([*args, "--data", str(tmp_path / "empty")]) == 2
    assert "no image files" in capsys.readouterr().err


@needs_fashion
@pytest.mark.slow
def test_report_says_which_map_to_trust(tmp_path: Path) -> None:
    out = tmp_path / "r"
    argv = ["report", "fashion-cnn", "test:0", "--out", str(out)]
    assert main([*argv, "--faithfulness", "test", "--faithfulness-images", "6"]) == 0
    page = (out / "index.html").read_text()
    assert "Which map to trust" in page and "Measured on 6 images of test" in page
    assert (out / "faithfulness.png").read_bytes()[:4] == b"\x89PNG"
    for method in ("gradcampp", "eigencam", "random", "edges"):
        assert f"<td>{method}</td>" in page


def test_road_and_sanity_columns_are_the_tests_by_themselves() -> None:
    """Each column of ``score_methods(..., road=True, sanity=True)`` is the mean of the
    stand-alone test on the same maps, seeds and randomised network."""
    from convlens.interpret import road, sanity
    from convlens.interpret.faithfulness import score_methods
    from convlens.interpret.maps import registry

    model, x, _ = fashion()
    model.eval()
    x = torch.cat([x, x.flip(2)])
    rows = score_methods(model, [x[:5], x[5:]], ["gradcam", "saliency", "random"], steps=4,
                         progress=False, road=True, sanity=True)  # fmt: skip
    with torch.no_grad():
        top1 = model(x).argmax(1)
    for row in rows:
        if row.method == "random":  # a map that ignores the model passes no sanity check
            assert row.mprt == pytest.approx(1.0) and row.random_logit == pytest.approx(1.0)
            assert row.emprt == pytest.approx(0.0)
            continue
        explain = sanity.map_explainer(row.method)
        parts = [(x[:5], top1[:5], 0), (x[5:], top1[5:], 5)]
        logit = torch.cat([sanity.random_logit(model, a, c, explain, seed=s) for a, c, s in parts])
        assert row.random_logit == pytest.approx(float(logit.double().nanmean()), abs=1e-6)
        rise = sanity.efficient_randomisation(model, x, top1, explain, seed=42)
        assert row.emprt == pytest.approx(float(rise.double().nanmean()), abs=1e-6)
        mprt = sanity.model_randomisation(model, x, top1, explain).last()
        assert row.mprt == pytest.approx(float(mprt.double().nanmean()), abs=1e-6)
        maps = registry.explainer(model, row.method)
        areas = []
        for a, c, s in parts:
            settings = road.RoadSettings(seed=s)
            areas.append(road.road_curves(model, a, maps(a, c), c, "lerf", settings).area())
        assert row.road_lerf == pytest.approx(float(torch.cat(areas).double().mean()), abs=1e-6)
        assert row.road_morf is not None and 0 <= row.road_morf <= 1


def test_methods_with_the_same_maps_share_their_curves_exactly() -> None:
    """On fashion-cnn Grad-CAM and Shapley-CAM give the same maps to the bit: the table
    scores the curves once, and the shared row is the row each gets alone."""
    from convlens.interpret.faithfulness import score_methods

    model, x, _ = fashion()
    model.eval()
    x = torch.cat([x, x.flip(2)])
    options: dict[str, Any] = {"steps": 4, "progress": False, "road": True, "sanity": True}
    both = score_methods(model, [x[:5], x[5:]], ["gradcam", "shapleycam"], **options)
    alone = score_methods(model, [x[:5], x[5:]], ["shapleycam"], **options)
    assert both[1].method == alone[0].method == "shapleycam"
    for field in dataclasses.fields(alone[0]):
        a, b = getattr(both[1], field.name), getattr(alone[0], field.name)
        assert torch.equal(a, b) if isinstance(a, torch.Tensor) else a == b, field.name
    assert both[0].deletion_auc == alone[0].deletion_auc  # the maps are the same


def test_faithfulness_cli_with_road_and_sanity(tmp_path: Path) -> None:
    out = tmp_path / "f"
    args = ["faithfulness", "fashion-cnn", "--limit", "6", "--steps", "4", "--methods", "gradcam",
            "--no-references", "--road", "--sanity", "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    header, row = (out / "faithfulness.csv").read_text().splitlines()
    assert header.endswith("ROAD MoRF,ROAD LeRF,MPRT,eMPRT,random logit")
    assert len(row.split(",")) == len(header.split(",")) and row.startswith("gradcam,6,")


def test_the_deletion_curve_alone_is_faithfulness_deletion() -> None:
    from convlens.interpret.faithfulness import deletion_curve

    model, x, _ = fashion()
    maps = torch.rand(4, 28, 28, generator=torch.Generator().manual_seed(0))
    classes = torch.tensor([1, 2, 3, 4])
    both = faithfulness(model.eval(), x, maps, classes, steps=7)
    fractions, deletion = deletion_curve(model, x, maps, classes, steps=7)
    assert torch.equal(fractions, both.fractions)
    assert torch.allclose(deletion, both.deletion, atol=1e-6)
