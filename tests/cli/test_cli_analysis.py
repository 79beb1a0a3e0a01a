from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from convlens.cli import main
from tests.helpers import needs_fashion, official_checkpoint, one_error_line


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    """A 320x240 RGB image: blue 'sky' on top, grey 'buildings' below."""
    a = np.zeros((240, 320, 3), dtype=np.uint8)
    a[:100] = (90, 150, 230)
    a[100:] = (120, 110, 100)
    a[100:, ::20] = 30
    path = tmp_path / "scene.png"
    Image.fromarray(a).save(path)
    return path


def test_layers_places365(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, _ = official_checkpoint(tmp_path, "wideresnet18")
    assert main(["layers", "places365-wideresnet18", "--weights", str(path)]) == 0
    out = capsys.readouterr().out
    assert "layer4.1.conv2" in out and "out 1x512x14x14" in out


def test_filters_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "f.png"
    assert main(["filters", "torchvision:resnet18", "--weights", "none", "--out", str(out)]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG" and "colour" in capsys.readouterr().out
    assert (
        main(
            [
                "filters",
                "fashion-cnn",
                "--layer",
                "features.1.0.conv",
                "--filters",
                "0,1,2",
                "--out",
                str(tmp_path / "g.svg"),
            ]
        )
        == 0
    )
    assert "8 input channels each" in capsys.readouterr().out


def test_units_cli_modes(tmp_path: Path, photo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, _ = official_checkpoint(tmp_path, "resnet18")
    common = ["places365-resnet18", str(photo), "--weights", str(path), "--layer", "layer4"]
    assert main(["units", *common, "--unit", "3", "7", "--out", str(tmp_path / "u.png")]) == 0
    assert main(["units", *common, "--top", "4", "--out", str(tmp_path / "t.png")]) == 0
    assert capsys.readouterr().out.count("unit ") == 4
    assert (
        main(["units", *common, "--region", "0,0,320,100", "--out", str(tmp_path / "r.png")]) == 0
    )
    assert "ranked by IoU" in capsys.readouterr().out
    mask = np.zeros((240, 320), dtype=np.uint8)
    mask[:100] = 255
    Image.fromarray(mask).save(tmp_path / "sky.png")
    assert (
        main(
            [
                "units",
                *common,
                "--mask",
                str(tmp_path / "sky.png"),
                "--out",
                str(tmp_path / "m.png"),
            ]
        )
        == 0
    )
    for name in ("u", "t", "r", "m"):
        assert (tmp_path / f"{name}.png").stat().st_size > 1000


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--unit", "999"], r"units \[999\] out of range: layer 'features.2.1' has 128 units"),
        (["--region", "1,2,3"], "--region takes four numbers"),
        (["--top", "0"], "--top must be in 1..128"),
    ],
)
@needs_fashion
def test_units_cli_errors(
    extra: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.helpers import fashion_available

    if not fashion_available():
        pytest.skip("FashionMNIST not installed")
    assert main(["units", "fashion-cnn", "test:0", "--layer", "features.2.1", *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and __import__("re").search(message, err), err


def test_units_cli_bad_image_and_layer(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    assert main(["units", "fashion-cnn", str(bad), "--layer", "features.2.1", "--top", "2"]) == 2
    assert "is not a readable image" in capsys.readouterr().err
    img = tmp_path / "g.png"
    Image.fromarray(np.zeros((40, 30), dtype=np.uint8)).save(img)
    assert main(["units", "fashion-cnn", str(img), "--layer", "features.9", "--top", "2"]) == 2
    assert "unknown layer 'features.9'" in capsys.readouterr().err


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "I;16", "1"])
def test_image_modes_convert(tmp_path: Path, mode: str) -> None:
    from convlens.data import images

    rgb = Image.fromarray((np.random.default_rng(0).random((20, 30, 3)) * 255).astype(np.uint8))
    img = rgb.convert("L").convert(mode) if mode in ("I;16", "1") else rgb.convert(mode)
    path = tmp_path / f"im.{'tiff' if mode == 'I;16' else 'png'}"
    img.save(path)
    for channels in (1, 3):
        out = images.open_image(path, channels)
        assert out.mode == ("L" if channels == 1 else "RGB") and out.size == (30, 20)
    x = images.load_batch(
        [str(path)], images.Preprocessing(resize=16, crop=16, mean=(0.5,) * 3, std=(0.5,) * 3)
    )
    assert x.shape == (1, 3, 16, 16) and torch.isfinite(x).all()
    assert x.min() >= -1 and x.max() <= 1


def test_16bit_grayscale_uses_full_range(tmp_path: Path) -> None:
    from convlens.data import images

    a = np.array([[0, 32768, 65535]], dtype=np.uint16)
    Image.fromarray(a).save(tmp_path / "deep.png")
    out = np.asarray(images.open_image(tmp_path / "deep.png", channels=1))
    assert out.tolist() == [[0, 128, 255]]


def test_cam_cli(tmp_path: Path, photo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, _ = official_checkpoint(tmp_path, "resnet18")
    common = ["places365-resnet18", str(photo), str(photo), "--weights", str(path)]
    out = tmp_path / "cam.png"
    assert main(["cam", *common, "--top", "3", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "cam of layer layer4 (7x7 maps)" in text and out.read_bytes()[:4] == b"\x89PNG"
    assert text.count("scene.png: ") == 2
    assert (
        main(["cam", *common, "--method", "gradcam", "--layer", "layer3", "--out", str(out)]) == 0
    )
    assert "gradcam of layer layer3 (14x14 maps)" in capsys.readouterr().out
    vgg = ["cam", "torchvision:vgg11", "--weights", "none", str(photo), "--out", str(out)]
    assert main(vgg) == 2
    assert "use Grad-CAM (--method gradcam)" in capsys.readouterr().err


def test_ablate_cli(tmp_path: Path, photo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, _ = official_checkpoint(tmp_path, "resnet18")
    common = ["ablate", "places365-resnet18", str(photo), "--weights", str(path)]
    out = tmp_path / "a.svg"
    assert main([*common, "--top", "4", "--min-units", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "units of layer4 with the largest FC weight" in text
    assert "before" in text and "after activation ablation of 4 units of layer4" in text
    assert "fewest units of layer4 (activation ablation), exact minimum" in text
    assert "confirmed by a real forward pass" in text and out.read_text().startswith("<?xml")
    args = [*common, "--layer", "layer4.1", "--units", "1", "2", "--mode", "weights"]
    assert main([*args, "--out", str(out)]) == 0
    assert "weights ablation of 2 units of layer4.1.conv2" in capsys.readouterr().out
    assert main([*common, "--units", "600"]) == 2
    assert "units [600] out of range: layer 'layer4' has 512" in capsys.readouterr().err
    assert main(common) == 2
    assert "give --units K [K ...], --top N or --min-units" in capsys.readouterr().err


@needs_fashion
def test_ablate_and_cam_on_the_shipped_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "a.png"
    args = ["ablate", "fashion-cnn", "test:0", "--layer", "features.1", "--min-units"]
    assert main([*args, "--max-units", "3", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "greedy" in text and "images run through the model" in text
    assert main(["cam", "fashion-cnn", "test:0", "test:1", "--out", str(out)]) == 0
    assert "test:1: Pullover" in capsys.readouterr().out


@needs_fashion
def test_the_later_cam_members_options_on_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "finer.png"
    base = ["cam", "fashion-cnn", "test:0", "--top", "1", "--out", str(out)]
    assert main([*base, "--method", "finercam", "--compare-with", "3,4", "--alpha", "0.5"]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG"
    capsys.readouterr()
    assert main([*base, "--method", "refinecam", "--layers", "features.0,features"]) == 0
    assert main([*base, "--method", "kpcacam", "--kernel", "rbf", "--gamma", "0.1"]) == 0
    capsys.readouterr()
    assert main([*base, "--method", "finercam", "--compare-with", "12"]) == 2
    assert one_error_line(capsys).endswith(
        "comparison class 12 is out of range 0..9 (--compare-with)"
    )
    assert main([*base, "--method", "gradcam", "--compare-with", "3"]) == 2
    assert "--compare-with is an option of finercam only" in one_error_line(capsys)
    assert main([*base, "--method", "refinecam", "--layers", "features,nowhere"]) == 2
    assert "nowhere" in one_error_line(capsys)


@pytest.mark.slow
def test_report_cli_on_places365(
    tmp_path: Path, photo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, _ = official_checkpoint(tmp_path, "resnet18")
    out = tmp_path / "rep"
    args = ["report", "places365-resnet18", str(photo), "--weights", str(path), "--out", str(out)]
    # the visualisation is tested in tests/interpret/test_visualize.py
    args += ["--visualize-steps", "4"]
    assert main([*args, "--region", "0,0,320,100", "--units", "3,7"]) == 0
    assert f"open {(out / 'index.html').resolve()}" in capsys.readouterr().out
    text = (out / "index.html").read_text()
    assert "filters-conv1.png" in text and "units-region.png" in text and "cam.png" in text
    assert "Feature maps of units [3, 7] of layer4" in text
    assert "Problem 4" not in text  # neither a run directory nor a sweep
