"""The everyday path as a new user meets it: a quick CLI, the same inputs for every
command, one-line errors for hostile files, and an API that leaves the process alone."""

from __future__ import annotations

import argparse
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from convlens import models
from convlens.cli import ablate as cli_ablate
from convlens.cli import cam as cli_cam
from convlens.cli import faithfulness as cli_faithfulness
from convlens.cli import main
from convlens.config import TrainConfig
from convlens.data import fashion_mnist as fm
from convlens.data import images
from convlens.inference import evaluate, get_prediction, predict_logits
from convlens.interpret import ablation, faithfulness
from convlens.interpret.maps import registry
from convlens.models import places365
from convlens.training.loop import make_optimizer, train, train_one_epoch
from tests.helpers import needs_fashion, official_checkpoint, one_error_line

# ----------------------------------------------------------------------------- start-up


def test_the_cli_starts_without_torch_optuna_or_matplotlib() -> None:
    """Building the whole parser (what --help needs) imports none of the heavy packages."""
    code = (
        "import sys; from convlens.cli import build_parser; build_parser(); "
        "heavy = [m for m in ('torch', 'torchvision', 'optuna', 'matplotlib', 'sqlalchemy', "
        "'numpy', 'PIL') if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_fashion_cnn_loads_without_torchvision() -> None:
    code = (
        "import sys; from convlens import inference, models; models.load('fashion-cnn'); "
        "print('torchvision' in sys.modules, 'optuna' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False False"


def cli_cam_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    cli_cam.add_parser(parser.add_subparsers())
    return parser._subparsers._group_actions[0].choices["cam"]  # type: ignore[union-attr]


def test_cli_choices_match_the_library() -> None:
    choices = next(a.choices for a in cli_cam_parser()._actions if a.dest == "method")
    assert tuple(choices) == (*registry.names(), "all")
    assert tuple(ablation.MODES) == cli_ablate.MODES
    assert tuple(ablation.ORDERS) == cli_ablate.ORDERS
    assert cli_faithfulness.REFERENCES == faithfulness.REFERENCE_MAPS


# ----------------------------------------------------------------------------- inputs


@needs_fashion
def test_predict_takes_test_images_like_every_other_command(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["predict", "fashion-cnn", "test:0", "test:7", "--top", "2"]) == 0
    out = capsys.readouterr().out
    assert "test:0 (true: Ankle boot)" in out and "test:7 (true: Shirt)" in out
    assert out.count("%") == 4


def test_predict_a_photo_with_offline_places365_weights(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    weights, net = official_checkpoint(tmp_path, "resnet18")
    photo = tmp_path / "scene.png"
    Image.fromarray(np.full((240, 320, 3), (90, 150, 230), dtype=np.uint8)).save(photo)
    assert main(["predict", "places365-resnet18", str(photo), "--weights", str(weights)]) == 0
    out = capsys.readouterr().out.splitlines()
    x = images.load_batch([str(photo)], places365.PREPROCESSING)
    with torch.no_grad():
        best = int(net(x).argmax(1))
    names = places365.parse_categories((tmp_path / places365.CATEGORIES_FILE).read_text())
    assert out[0] == str(photo) and out[1].endswith(f"  {names[best]}")


def _png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG that declares ``width x height`` pixels but holds almost no data: the shape
    of a decompression bomb, a few bytes on disk."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


def test_a_decompression_bomb_gets_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    bomb = tmp_path / "bomb.png"
    _png_header_only(bomb, 30_000, 30_000)
    assert main(["predict", "fashion-cnn", str(bomb)]) == 2
    line = one_error_line(capsys)
    assert "30000x30000 = 900,000,000 pixels" in line and "89,478,485" in line
    assert "CONVLENS_MAX_IMAGE_PIXELS" in line
    # Just over Pillow's own warning size but under its error size: still our one limit.
    medium = tmp_path / "medium.png"
    _png_header_only(medium, 10_000, 10_000)
    with pytest.raises(images.ImageTooLargeError, match="100,000,000 pixels"):
        images.open_image(medium)
    monkeypatch.setenv("CONVLENS_MAX_IMAGE_PIXELS", "100")
    small = tmp_path / "small.png"
    Image.new("L", (20, 20)).save(small)
    with pytest.raises(images.ImageTooLargeError, match="400 pixels, more than the limit of 100"):
        images.open_image(small)
    monkeypatch.setenv("CONVLENS_MAX_IMAGE_PIXELS", "lots")
    with pytest.raises(ValueError, match="CONVLENS_MAX_IMAGE_PIXELS='lots'"):
        images.open_image(small)


class Payload:
    """Stands for any object a pickle could smuggle in."""


@pytest.mark.parametrize("where", ["convlens", "places365"])
def test_pickled_objects_are_refused_and_said_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str
) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "extra": Payload()}, path)
    argv = (
        ["predict", str(path), "test:0"]
        if where == "convlens"
        else ["predict", "places365-resnet18", "x.png", "--weights", str(path)]
    )
    assert main(argv) == 2
    line = one_error_line(capsys)
    assert "refused" in line and "pickled Python objects other than tensors" in line
    assert "Payload" in line and "never unpickles" in line and "truncated" not in line


# ----------------------------------------------------------------------------- API


def test_train_one_epoch_without_a_generator_shuffles_anew_each_call(
    tiny_config: TrainConfig, tiny_data: tuple[fm.Dataset, fm.Dataset]
) -> None:
    model = models.build_model(tiny_config)
    calls: list[torch.Tensor] = []
    model.register_forward_pre_hook(lambda m, a: calls.append(a[0].detach().clone()))
    opt = make_optimizer(model, tiny_config)
    part = tiny_data[0].subset(slice(0, 64))
    train_one_epoch(model, opt, part.images, part.labels, batch_size=64)
    train_one_epoch(model, opt, part.images, part.labels, batch_size=64)
    assert len(calls) == 2 and not torch.equal(calls[0], calls[1])
    # ... and torch.manual_seed makes the sequence reproducible.
    again: list[torch.Tensor] = []
    model2 = models.build_model(tiny_config)
    model2.register_forward_pre_hook(lambda m, a: again.append(a[0].detach().clone()))
    torch.manual_seed(0)
    train_one_epoch(
        model2, make_optimizer(model2, tiny_config), part.images, part.labels, batch_size=64
    )
    torch.manual_seed(0)
    train_one_epoch(
        model2, make_optimizer(model2, tiny_config), part.images, part.labels, batch_size=64
    )
    assert torch.equal(again[0], again[1])


def test_uint8_inputs_use_the_models_own_preprocessing() -> None:
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(4, 5),
    ).eval()
    pixels = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8)
    prep = images.IMAGENET_PREPROCESSING
    with pytest.raises(ValueError, match=r"uint8 images of shape \(2, 3, 16, 16\) need the model"):
        predict_logits(net, pixels)
    mean = torch.tensor(prep.mean)[:, None, None]
    std = torch.tensor(prep.std)[:, None, None]
    expected = net((pixels.float() / 255 - mean) / std)
    got = predict_logits(net, pixels, preprocessing=prep)
    assert torch.allclose(got, expected, atol=1e-5)
    labels = got.argmax(1)
    assert evaluate(net, pixels, labels, preprocessing=prep) == 1.0


def test_empty_batches_keep_their_class_dimension() -> None:
    net = models.load("fashion-cnn").model
    empty = torch.zeros(0, 1, 28, 28, dtype=torch.uint8)
    assert predict_logits(net, empty).shape == (0, 10)
    assert get_prediction(net, empty).shape == (0,)


def test_train_gives_back_the_process_state(
    tmp_path: Path, tiny_config: TrainConfig, tiny_data: tuple[fm.Dataset, fm.Dataset]
) -> None:
    threads = torch.get_num_threads()
    torch.manual_seed(1234)
    rng = torch.get_rng_state()
    train(tiny_config.replace(epochs=1, threads=1), tmp_path / "run", datasets=tiny_data)
    assert torch.get_num_threads() == threads
    assert torch.equal(torch.get_rng_state(), rng)


def test_library_errors_name_arguments_and_the_cli_names_flags(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    tiny_config: TrainConfig,
    tiny_data: tuple[fm.Dataset, fm.Dataset],
) -> None:
    run = tmp_path / "run"
    train(tiny_config.replace(epochs=1), run, datasets=tiny_data)
    with pytest.raises(ValueError, match=r"continue it \(`resume`\) or choose another `run_dir`"):
        train(tiny_config, run, datasets=tiny_data)
    assert main(["train", "--out", str(run), "--epochs", "1"]) == 2
    line = one_error_line(capsys)
    assert "continue it (--resume) or choose another --out" in line and "`" not in line
    capsys.readouterr()
    assert main(["ablate", str(run), "x.png", "--weights", "w.pt", "--units", "1"]) == 2
    assert (
        "--weights applies to places365-*, torchvision:*, timm:* and fashion-cnn"
        in one_error_line(capsys)
    )
