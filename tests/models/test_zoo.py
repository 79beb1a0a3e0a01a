from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from convlens import models
from convlens.models import places365
from tests.helpers import official_checkpoint


@pytest.mark.parametrize("arch", ["resnet18", "wideresnet18"])
def test_official_format_gives_identical_logits(tmp_path: Path, arch: str) -> None:
    path, net = official_checkpoint(tmp_path, arch)
    assert path.read_bytes()[:2] != b"PK", "legacy (non-zip) serialisation expected"
    loaded = models.load(f"places365-{arch}", weights=path, progress=False)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(loaded.model(x), net(x))
    assert loaded.classes[0] == "airfield" and loaded.classes[1] == "apartment_building/outdoor"
    assert len(loaded.classes) == 365
    assert loaded.preprocessing.resize == 256 and loaded.preprocessing.crop == 224


def test_wideresnet18_layer4_is_14x14() -> None:
    from convlens.core.hooks import activations

    _, acts = activations(places365.wideresnet18(), torch.randn(1, 3, 224, 224), "layer4")
    assert acts["layer4"].shape == (1, 512, 14, 14)


@pytest.mark.slow
def test_resnet50_zip_format(tmp_path: Path) -> None:
    path, net = official_checkpoint(tmp_path, "resnet50", legacy=False)
    loaded = models.load("places365-resnet50", weights=path, progress=False)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(loaded.model(x), net(x))


def test_html_page_saved_as_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "resnet18_places365.pth.tar"
    path.write_text("<!DOCTYPE html><html><body>404 Not Found</body></html>")
    with pytest.raises(ValueError, match="is an HTML page, not a checkpoint"):
        models.load("places365-resnet18", weights=path, progress=False)


def test_truncated_checkpoint(tmp_path: Path) -> None:
    path, _ = official_checkpoint(tmp_path, "resnet18")
    path.write_bytes(path.read_bytes()[:2_000_000])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        models.load("places365-resnet18", weights=path, progress=False)


def test_wrong_architecture(tmp_path: Path) -> None:
    path, _ = official_checkpoint(tmp_path, "resnet18")
    with pytest.raises(ValueError, match="is a resnet18 checkpoint, not resnet50"):
        models.load("places365-resnet50", weights=path, progress=False)
    record = torch.load(path, weights_only=True)
    del record["arch"]
    torch.save(record, path)
    with pytest.raises(ValueError, match="does not fit the ResNet architecture: .*missing keys"):
        models.load("places365-resnet50", weights=path, progress=False)


def test_python2_pickle_is_read_as_latin1(tmp_path: Path) -> None:
    """A legacy torch file whose pickle holds a Python-2 byte string (not ASCII)."""
    sys_info = {
        "protocol_version": 1001,
        "little_endian": True,
        "type_sizes": {"short": 2, "int": 4, "long": 4},
    }
    py2_dict = b"\x80\x02}q\x00(U\x04archq\x01U\x08resnet18q\x02U\x04noteq\x03U\x04caf\xe9q\x04u."
    raw = (
        pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2)
        + pickle.dumps(1001, protocol=2)
        + pickle.dumps(sys_info, protocol=2)
        + py2_dict
        + pickle.dumps([], protocol=2)
    )
    path = tmp_path / "py2.pth.tar"
    path.write_bytes(raw)
    with pytest.raises(UnicodeDecodeError):
        torch.load(path, weights_only=True)
    # decoded (as latin-1), then rejected for what it is: no weights inside
    with pytest.raises(ValueError, match="holds no state_dict of tensors"):
        places365.read_checkpoint(path, "resnet18")


def test_categories_file_is_validated() -> None:
    with pytest.raises(ValueError, match="expected '/x/name index'"):
        places365.parse_categories("airfield 0\n")
    with pytest.raises(ValueError, match="expected indices 0..364, found 1"):
        places365.parse_categories("/a/airfield 0\n")


def test_torchvision_errors() -> None:
    with pytest.raises(ValueError, match="unknown torchvision model 'resnet19'"):
        models.load("torchvision:resnet19")
    loaded = models.load("torchvision:resnet18", weights="none")
    assert len(loaded.classes) == 1000 and not loaded.model.training


def test_torchvision_weights_missing_from_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(ValueError, match="not in the local torch cache"):
        models.load("torchvision:resnet18")


def test_torchvision_from_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from torchvision.models import ResNet18_Weights, resnet18

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    net = resnet18().eval()
    name = Path(ResNet18_Weights.DEFAULT.url).name
    (tmp_path / "checkpoints").mkdir()
    torch.save(net.state_dict(), tmp_path / "checkpoints" / name)
    loaded = models.load("torchvision:resnet18")
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(loaded.model(x), net(x))
    assert loaded.classes[0] == "tench"
