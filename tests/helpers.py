"""What several test modules share: markers, the tiny models and the checkpoints the
tests build, and the check that a command failed with one line."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from torch import nn

from convlens import models
from convlens.data import fashion_mnist as fm
from convlens.models import FashionCNN, places365

ROOT = Path(__file__).resolve().parents[1]  # the repository


def fashion_available() -> bool:
    return fm.find_data_dir() is not None


# Outside CI a machine without the data skips these tests; in CI (CI=true, where
# `make test` installs the data) they run, so a broken install fails instead of hiding.
needs_fashion = pytest.mark.skipif(
    not fashion_available() and not os.environ.get("CI"),
    reason="FashionMNIST not installed (apt-get install dataset-fashion-mnist)",
)


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    return err


def tiny_gap_model() -> FashionCNN:
    """A random 2-stage FashionCNN with non-trivial BatchNorm statistics."""
    torch.manual_seed(0)
    model = FashionCNN(widths=(4, 6), depth=(1, 1), num_classes=5)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    nn.init.normal_(model.fc.bias)
    return model


def fashion() -> tuple[nn.Module, torch.Tensor, str]:
    """The shipped model, freshly loaded, on four seeded random inputs."""
    torch.manual_seed(0)
    return models.load("fashion-cnn").model, torch.randn(4, 1, 28, 28), "features"


def write_categories(folder: Path) -> None:
    lines = ["/a/airfield 0", "/a/apartment_building/outdoor 1"]
    lines += [f"/c/category_{i} {i}" for i in range(2, 365)]
    (folder / places365.CATEGORIES_FILE).write_text("\n".join(lines) + "\n")


def official_checkpoint(
    folder: Path, arch: str, legacy: bool = True
) -> tuple[Path, torch.nn.Module]:
    """A checkpoint in CSAIL's format from a randomly initialised network."""
    torch.manual_seed(0)
    net = places365.build(arch).eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    path = places365.save_checkpoint(net, arch, folder / f"{arch}_places365.pth.tar", legacy)
    write_categories(folder)
    return path, net
