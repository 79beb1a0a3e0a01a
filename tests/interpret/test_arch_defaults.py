"""Architectures we did not write, with random weights at a small size: the default layer
has spatial maps and is the same everywhere, class names come from the model's output,
layers that do not run in evaluation mode are listed as such, and the messages name
the right thing and a fix that helps."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from PIL import Image

from convlens import list_layers, load_model
from convlens.cli import main
from convlens.interpret import ablation
from convlens.interpret.heads import NotGapHeadError, default_layer, find_gap_head
from convlens.interpret.maps import registry
from convlens.interpret.maps.base import FlatMapsWarning
from convlens.serve.explorer import Explorer
from tests.helpers import one_error_line


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("img") / "photo.png"
    g = torch.Generator().manual_seed(0)
    pixels = (torch.rand(96, 96, 3, generator=g) * 255).byte().numpy()
    Image.fromarray(pixels).save(path)
    return path


def loaded(arch: str):
    torch.manual_seed(0)
    return load_model(f"torchvision:{arch}", weights="none")


def x_of(model_input_size: int = 96) -> torch.Tensor:
    return torch.randn(2, 3, model_input_size, model_input_size)


@pytest.mark.parametrize(
    ("arch", "expected"),
    [("convnext_tiny", "features"), ("squeezenet1_1", "classifier.2"), ("resnet18", "layer4")],
)
def test_the_default_layer_has_spatial_maps_and_one_rule(arch: str, expected: str) -> None:
    lm = loaded(arch)
    x = x_of()
    assert default_layer(lm.model, x) == expected
    assert default_layer(lm.model, torch.zeros_like(x)) == expected  # shape, not pixels
    maps = registry.class_maps(lm.model, x, top=1, method="gradcam")
    assert maps.layer == expected and maps.maps.shape[-1] > 1
    # the explorer reads the same layer as the CLI and the API
    explorer = Explorer(lm)
    try:
        assert explorer.default_layer == default_layer(lm.model, x[:1])
    finally:
        explorer.close()


def test_cam_on_convnext_says_the_head_is_not_linear(
    image: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lm = loaded("convnext_tiny")
    with pytest.raises(NotGapHeadError, match="1x1 output of 'classifier.0'.*LayerNorm"):
        registry.class_maps(lm.model, x_of(), method="cam")
    assert main(["cam", "torchvision:convnext_tiny", "--weights", "none", str(image)]) == 2
    line = one_error_line(capsys)
    assert "--method gradcam" in line and "`" not in line


def test_a_1x1_layer_chosen_by_hand_is_warned_about(
    image: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lm = loaded("convnext_tiny")
    with pytest.warns(FlatMapsWarning, match="'classifier.0' has 1x1 maps.*'features'"):
        registry.class_maps(lm.model, x_of(), method="gradcam", layer="classifier.0")
    argv = ["cam", "torchvision:convnext_tiny", "--weights", "none", str(image)]
    argv += ["--method", "gradcam", "--layer", "classifier.0", "--out", str(tmp_path / "c.png")]
    assert main(argv) == 0
    err = capsys.readouterr().err.strip()
    assert err.startswith("convlens cam: warning: layer 'classifier.0' has 1x1 maps")
    assert "(--layer)" in err and len(err.splitlines()) == 1
    with warnings.catch_warnings():  # a layer with spatial maps: no warning
        warnings.simplefilter("error")
        registry.class_maps(lm.model, x_of(), method="gradcam", layer="features")


@pytest.mark.slow
def test_squeezenet_gets_its_class_names_from_its_output(image: Path, tmp_path: Path) -> None:
    lm = loaded("squeezenet1_1")
    assert len(lm.classes) == 1000 and lm.classes[999] == "class 999"
    base = ["torchvision:squeezenet1_1", "--weights", "none", str(image)]
    out = str(tmp_path / "out.png")
    assert main(["cam", *base, "--method", "gradcam", "--out", out]) == 0
    assert main(["cam", *base, "--method", "all", "--out", out]) == 0
    assert main(["ablate", *base, "--layer", "features.9", "--units", "1", "2", "--out", out]) == 0
    explorer = Explorer(lm, images_dir=image.parent)
    try:
        answer = explorer.predict(explorer.list_images(0, 1)["items"][0]["id"])
        assert len(answer["top5"]) == 5
    finally:
        explorer.close()


@pytest.mark.slow
def test_layers_that_do_not_run_in_evaluation_mode_are_listed_as_such(
    image: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lm = loaded("googlenet")
    rows = {r.name: r for r in list_layers(lm.model, torch.zeros(1, 3, 96, 96))}
    assert rows["aux1.conv.conv"].output_shape is None
    assert rows["conv1.conv"].output_shape == (1, 64, 48, 48)
    assert main(["layers", "torchvision:inception_v3", "--weights", "none", "--size", "96"]) == 0
    assert "AuxLogits.conv0.conv" in capsys.readouterr().out
    # the report runs past the layers that do not run (its drawing of maps and its
    # feature visualisation are tested elsewhere, and take minutes on googlenet)
    report = ["report", "torchvision:googlenet", "--weights", "none", str(image)]
    light = ["--methods", "saliency", "--visualize-steps", "2"]
    assert main([*report, *light, "--out", str(tmp_path / "report")]) == 0


def test_messages_name_the_layer_s_own_shape_and_a_fix_that_helps(
    image: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    resnet = loaded("resnet18").model
    x = x_of()
    with pytest.raises(NotGapHeadError, match=r"layer 'layer3''s \[1, 256, 6, 6\] output"):
        find_gap_head(resnet, x, "layer3")
    vgg = loaded("vgg11").model
    with pytest.raises(NotGapHeadError, match="choose the units yourself") as e:
        ablation.top_weighted_units(vgg, x[:1], 3)
    assert "Grad-CAM" not in str(e.value)
    with pytest.raises(NotGapHeadError, match="name a layer") as e:
        ablation.fewest_units(vgg, x[:1])
    assert "Grad-CAM" not in str(e.value)
    argv = ["ablate", "torchvision:vgg11", "--weights", "none", str(image), "--top", "3"]
    assert main(argv) == 2
    line = one_error_line(capsys)
    assert "--units" in line and "Grad-CAM" not in line and "`" not in line
