"""Feature visualisation: the parameterisation equals torch-lucent's, the pictures do
what they claim on the shipped model, any CNN works, and bad input gets one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from lucent.optvis.param import color as lucent_color
from lucent.optvis.param import spatial as lucent_spatial

from convlens import models
from convlens.cli import main
from convlens.data.images import IMAGENET_PREPROCESSING
from convlens.data.sources import FashionSplit
from convlens.interpret import objectives as o
from convlens.interpret import visualize as v
from tests.helpers import needs_fashion, one_error_line

SIZES = [(224, 224), (28, 28), (27, 31)]


@pytest.mark.parametrize(("h", "w"), SIZES)
def test_the_fourier_parameterisation_equals_lucents(h: int, w: int) -> None:
    """Spectrum scaling, inverse FFT and colour decorrelation against torch-lucent's own
    functions (its image parameterisation needs no kornia), on the same spectrum."""
    torch.manual_seed(0)
    params, lucent_image = lucent_spatial.fft_image((2, 3, h, w), sd=0.01)
    raw = params[0].detach()  # lucent keeps one column more for an odd width
    freqs = lucent_spatial.rfft2d_freqs(h, w)
    lucent_scale = 1.0 / np.maximum(freqs, 1.0 / max(w, h))
    ours_scale = v.spectrum_scale(h, w)
    np.testing.assert_allclose(ours_scale.numpy(), lucent_scale[:, : w // 2 + 1], rtol=1e-6)
    ours = v.fourier_to_image(raw[:, :, :, : w // 2 + 1], h, w, ours_scale)
    theirs = lucent_image().detach()
    torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=0)
    rgb = lucent_color.to_valid_rgb(lucent_image, decorrelate=True)().detach()
    torch.testing.assert_close(v.to_rgb(ours, decorrelate=True), rgb, atol=1e-6, rtol=0)


def test_one_channel_images_are_not_decorrelated() -> None:
    param = v.ImageParam(2, 1, 28, 28)
    assert not param.decorrelate and param().shape == (2, 1, 28, 28)
    assert v.ImageParam(1, 3, 28, 28).decorrelate


def test_transforms_scale_with_the_input() -> None:
    big, small = v.Transforms.for_size(224), v.Transforms.for_size(28)
    assert (big.pad, big.jitter, big.jitter_after) == (12, 8, 4)
    assert (small.pad, small.jitter, small.jitter_after) == (2, 1, 1)


@pytest.fixture(scope="module")
def fashion():
    return models.load("fashion-cnn")


@pytest.fixture(scope="module")
def extremes(fashion) -> tuple[torch.Tensor, torch.Tensor]:
    return v.dataset_extremes(fashion.model, FashionSplit("test"), "features", list(range(128)))


@needs_fashion
@pytest.mark.slow
def test_units_reach_past_the_data_sets_extremes(fashion, extremes) -> None:
    """All 128 units of ``features`` in one run, defaults, 256 steps: at least 90% of live
    units reach 1.5x their maximum over the 10,000 test images; negated, 90% go below
    their minimum."""
    hi, _ = extremes
    up = v.visualize(fashion.model, o.channel("features", range(128)), fashion.preprocessing)
    live = [k for k in range(128) if k not in up.dead and hi[k] > 0]
    assert len(live) >= 100
    ratio = up.activation[live, 0] / hi[live]
    assert float((ratio >= 1.5).float().mean()) >= 0.9
    assert up.curve.shape == (256, 128) and bool((up.curve[-1] > up.curve[0]).all())
    # negated: below the minimum, on the last BatchNorm's signed output (after the ReLU
    # of `features` the minimum is 0 for nearly every unit, and nothing goes below it)
    layer = "features.2.1.bn"
    _, low = v.dataset_extremes(fashion.model, FashionSplit("test"), layer, list(range(128)))
    down = v.visualize(fashion.model, -o.channel(layer, range(128)), fashion.preprocessing)
    assert float((down.activation[:, 0] < low).float().mean()) >= 0.9


@needs_fashion
@pytest.mark.slow
def test_diversity_makes_the_images_differ_and_keeps_the_activation(fashion) -> None:
    units = list(range(0, 128, 8))
    four = v.VisualizeSettings(images=4)
    unit = o.channel("features", units)
    same = v.visualize(fashion.model, unit, fashion.preprocessing, four)
    varied = v.visualize(fashion.model, unit - 0.05 * o.diversity("features"),
                         fashion.preprocessing, four)  # fmt: skip
    assert same.diversity_similarity is not None and varied.diversity_similarity is not None
    drop = float(same.diversity_similarity.mean() - varied.diversity_similarity.mean())
    assert drop >= 0.1
    kept = float((varied.activation.mean(1) / same.activation.mean(1)).mean())
    assert kept >= 0.8


@pytest.mark.parametrize(
    ("arch", "layer"),
    [("resnet18", "layer2.1"), ("vgg11", "features.8"), ("convnext_tiny", "features.3.0")],
)
def test_any_cnn(arch: str, layer: str) -> None:
    lm = models.load(f"torchvision:{arch}", weights="none")
    r = v.visualize(lm.model, o.channel(layer, [0, 3]), lm.preprocessing,
                    v.VisualizeSettings(steps=8, size=64))  # fmt: skip
    # the optimisation differentiates the picture only: the user's model is left as it
    # was (no weight gradients computed or accumulated, every parameter trainable)
    assert all(p.grad is None and p.requires_grad for p in lm.model.parameters())
    assert r.images.shape == (2, 1, 3, 64, 64) and r.curve.shape == (8, 2)
    assert bool(r.images.min() >= 0) and bool(r.images.max() <= 1)
    for objective in ("neuron", "layer"):
        other = v.visualize(lm.model, o.from_kind(objective, layer, [1]), lm.preprocessing,
                            v.VisualizeSettings(steps=2, size=64))  # fmt: skip
        assert torch.isfinite(other.activation).all()
    cls = v.visualize(lm.model, o.class_logit([7]), lm.preprocessing,
                      v.VisualizeSettings(steps=2, size=64))  # fmt: skip
    assert cls.layer == "logits"


def test_a_direction_over_the_channels(fashion) -> None:
    d = torch.zeros(128)
    d[5], d[9] = 1.0, -1.0
    r = v.visualize(fashion.model, o.direction("features", d), fashion.preprocessing,
                    v.VisualizeSettings(steps=32))  # fmt: skip
    assert r.units == (0,) and float(r.curve[-1, 0]) > float(r.curve[0, 0])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"layer": "nope"}, "unknown layer 'nope'"),
        ({"units": [128]}, "[128] out of range: there are 128 units"),
        ({"steps": 0}, "`steps` must be at least 1"),
        ({"objective": "direction", "direction": torch.ones(5)}, "give a vector of 128"),
        ({"objective": "x"}, "unknown objective"),
        ({"size": 1}, "cannot take a 1x1 input"),
        ({"lr": float("inf")}, "not finite"),
    ],
)
def test_bad_input_is_one_line(fashion, kwargs: dict, message: str) -> None:
    args = {"layer": "features", "units": [0], "steps": 2, "objective": "channel", **kwargs}
    with pytest.raises(ValueError) as e:
        objective = o.from_kind(args.pop("objective"), args.pop("layer"), args.pop("units"),
                                args.pop("direction", None))  # fmt: skip
        v.visualize(fashion.model, objective, fashion.preprocessing, v.VisualizeSettings(**args))
    assert message in str(e.value) and "\n" not in str(e.value)


def test_objectives_compose_as_lucents(fashion) -> None:
    """``+``, ``-`` and scalar ``*`` build one objective over several layers; a weight of
    zero leaves the pictures as they were; parts with different numbers of targets, an
    objective of regularisers only and the old call form are refused in one line."""
    unit = o.channel("features", [3, 7])
    both = unit + 0.5 * o.neuron("features.1.1.conv", [0, 1]) - 0.05 * o.diversity("features")
    assert repr(both) == (
        "channel('features', [3, 7]) + 0.5 * neuron('features.1.1.conv', [0, 1]) "
        "- 0.05 * diversity('features')"
    )
    assert both.layers() == ["features", "features.1.1.conv"] and both.targets == (3, 7)
    few = v.VisualizeSettings(steps=4, images=2)
    r = v.visualize(fashion.model, both, fashion.preprocessing, few)
    assert r.images.shape[:2] == (2, 2) and r.units == (3, 7) and r.layer == "features"
    assert r.objective.startswith("channel('features', [3, 7]) + 0.5 * neuron") and not r.negative
    plain = v.visualize(fashion.model, unit, fashion.preprocessing, few)
    zero = v.visualize(fashion.model, unit - 0 * o.diversity("features"), fashion.preprocessing,
                       few)  # fmt: skip
    torch.testing.assert_close(plain.images, zero.images, rtol=0, atol=0)
    down = v.visualize(fashion.model, -unit, fashion.preprocessing, few)
    assert down.negative and down.objective == "channel"
    with pytest.raises(ValueError, match="parts with 1 and 2 targets cannot be added"):
        unit + o.channel("features", [1])
    with pytest.raises(ValueError, match="only regularisers"):
        v.visualize(fashion.model, o.diversity("features"), fashion.preprocessing, few)
    with pytest.raises(TypeError, match="visualize takes an objective"):
        v.visualize(fashion.model, "features", fashion.preprocessing)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="combines with objectives"):
        unit + 1  # type: ignore[operator]


@needs_fashion
@pytest.mark.slow
def test_the_cli_writes_pictures_and_adds_them_to_an_atlas(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    atlas = tmp_path / "atlas"
    assert main(["dissect", "fashion-cnn", "--layer", "features", "--data", "test",
                 "--limit", "200", "--out", str(atlas)]) == 0  # fmt: skip
    out = tmp_path / "vis"
    argv = ["visualize", "fashion-cnn", "--layer", "features", "--units", "3,7", "--steps", "16"]
    assert main([*argv, "--out", str(out), "--atlas", str(atlas)]) == 0
    record = json.loads((out / "visualize.json").read_text())
    assert [r["unit"] for r in record["units"]] == [3, 7] and "dataset_max" in record["units"][0]
    assert {p.name for p in out.iterdir()} >= {"unit-0003.png", "unit-0007.png", "grid.png",
                                               "sanity.png", "visualize.json"}  # fmt: skip
    page = (atlas / "index.html").read_text()
    assert page.count('class="vis"') == 2 and (atlas / "units" / "vis-0003.png").is_file()
    assert main([*argv, "--out", str(out), "--atlas", str(atlas)]) == 0  # again: replaced
    assert (atlas / "index.html").read_text().count('class="vis"') == 2
    capsys.readouterr()
    bad = tmp_path / "bad"
    assert main(["visualize", "fashion-cnn", "--units", "500", "--out", str(bad)]) == 2
    assert "out of range" in one_error_line(capsys) and not bad.exists()
    assert main(["visualize", "fashion-cnn", "--all", "--steps", "0", "--out", str(bad)]) == 2
    assert "--steps must be at least 1" in one_error_line(capsys) and not bad.exists()


@needs_fashion
@pytest.mark.slow
def test_top_units_and_a_dissection_with_visualisations(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--top N`` picks the N units with the highest mean activation over the data;
    ``dissect --visualize`` puts a picture on every live unit's card."""
    loaded = models.load("fashion-cnn")
    out = tmp_path / "top"
    assert main(["visualize", "fashion-cnn", "--layer", "features", "--top", "3", "--steps",
                 "4", "--out", str(out)]) == 0  # fmt: skip
    record = json.loads((out / "visualize.json").read_text())
    hi, _ = v.dataset_extremes(loaded.model, FashionSplit("test"), "features", list(range(128)))
    assert [r["unit"] for r in record["units"]] == sorted(hi.argsort(descending=True)[:3].tolist())
    atlas = tmp_path / "atlas"
    assert main(["dissect", "fashion-cnn", "--layer", "features.1.1.conv", "--data", "test",
                 "--limit", "100", "--out", str(atlas), "--visualize",
                 "--visualize-steps", "4"]) == 0  # fmt: skip
    said = capsys.readouterr().out
    added = int(said.split("added ")[1].split()[0])
    assert added >= 32 and (atlas / "index.html").read_text().count('class="vis"') == added
    assert main(["dissect", "fashion-cnn", "--visualize", "--visualize-steps", "0",
                 "--out", str(tmp_path / "bad")]) == 2  # fmt: skip
    assert "--visualize-steps must be at least 1" in one_error_line(capsys)


def test_imagenet_normalisation_is_the_models(fashion) -> None:
    """A 3-channel model's pictures go through its own mean and std (no forced 224 px)."""
    lm = models.load("torchvision:resnet18", weights="none")
    assert lm.preprocessing.mean == IMAGENET_PREPROCESSING.mean
    r = v.visualize(lm.model, o.channel("layer1", [0]), lm.preprocessing,
                    v.VisualizeSettings(steps=1, size=40))  # fmt: skip
    assert r.images.shape[-1] == 40
