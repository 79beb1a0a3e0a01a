from __future__ import annotations

import gzip
import struct
from pathlib import Path

import pytest
import torch

from convlens.data import fashion_mnist as fm
from tests.helpers import needs_fashion


def idx_bytes(array: torch.Tensor) -> bytes:
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.to(torch.uint8).numpy().tobytes()


def test_parse_idx_roundtrip() -> None:
    a = torch.arange(2 * 3 * 4, dtype=torch.uint8).reshape(2, 3, 4)
    assert torch.equal(fm.parse_idx(idx_bytes(a), expect_ndim=3), a)


def test_parse_idx_bad_magic() -> None:
    raw = bytearray(idx_bytes(torch.zeros(3, dtype=torch.uint8)))
    raw[2] = 0x0D  # float data
    with pytest.raises(fm.DataError, match="bad IDX magic"):
        fm.parse_idx(bytes(raw), "labels.gz")


def test_parse_idx_wrong_dimensions() -> None:
    with pytest.raises(fm.DataError, match="2 dimensions, expected 3"):
        fm.parse_idx(idx_bytes(torch.zeros(2, 2, dtype=torch.uint8)), "x", expect_ndim=3)


def test_parse_idx_truncated_names_file() -> None:
    raw = idx_bytes(torch.zeros(5, 4, 4, dtype=torch.uint8))[:-7]
    with pytest.raises(fm.DataError, match=r"images\.gz: header announces shape \(5, 4, 4\)"):
        fm.parse_idx(raw, "images.gz")


def write_fake_dir(folder: Path, images: bytes | None = None) -> None:
    """The four files with valid IDX content of the real sizes (all zeros)."""
    folder.mkdir(parents=True, exist_ok=True)
    for key, (fname, _) in fm.FILES.items():
        n = 60_000 if key.startswith("train") else 10_000
        if key.endswith("images"):
            body = (
                images
                if images is not None and key == "test-images"
                else idx_bytes(torch.zeros(n, 28, 28, dtype=torch.uint8))
            )
        else:
            body = idx_bytes(torch.arange(n) % 10)
        (folder / fname).write_bytes(gzip.compress(body, compresslevel=1))


def test_load_from_given_dir(tmp_path: Path) -> None:
    write_fake_dir(tmp_path / "fm")
    ds = fm.load_fashion_mnist("test", tmp_path / "fm", download_missing=False)
    assert ds.images.shape == (10_000, 1, 28, 28) and ds.images.dtype == torch.uint8
    assert ds.labels.dtype == torch.int64 and ds.labels[:3].tolist() == [0, 1, 2]
    assert ds.classes[9] == "Ankle boot"


def test_corrupt_gzip_names_file(tmp_path: Path) -> None:
    write_fake_dir(tmp_path)
    target = tmp_path / fm.FILES["test-images"][0]
    target.write_bytes(target.read_bytes()[:1000])  # truncated download
    with pytest.raises(fm.DataError, match=r"t10k-images-idx3-ubyte\.gz.*truncated or corrupt"):
        fm.load_fashion_mnist("test", tmp_path, download_missing=False)


def test_wrong_count_is_rejected(tmp_path: Path) -> None:
    write_fake_dir(tmp_path, images=idx_bytes(torch.zeros(10, 28, 28, dtype=torch.uint8)))
    with pytest.raises(fm.DataError, match="expected 10000 images"):
        fm.load_fashion_mnist("test", tmp_path, download_missing=False)


def test_missing_everywhere_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fm, "SYSTEM_DIR", tmp_path / "nothing")
    monkeypatch.setenv("CONVLENS_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("CONVLENS_DATA", raising=False)
    with pytest.raises(fm.DataError, match="apt-get install dataset-fashion-mnist"):
        fm.load_fashion_mnist("train", download_missing=False)


def test_download_failure_is_one_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fm, "SYSTEM_DIR", tmp_path / "nothing")
    monkeypatch.setenv("CONVLENS_CACHE", str(tmp_path / "cache"))
    with pytest.raises(fm.DataError, match="cannot download .*apt-get install"):
        fm.download(tmp_path / "dl", base_url="http://127.0.0.1:9/", progress=False)


def test_unknown_split() -> None:
    with pytest.raises(ValueError, match="unknown split 'val'"):
        fm.load_fashion_mnist("val")


def test_train_val_split_is_seeded_and_disjoint() -> None:
    ds = fm.Dataset(torch.zeros(100, 1, 2, 2, dtype=torch.uint8), torch.arange(100))
    a_train, a_val = fm.train_val_split(ds, 20, seed=3)
    _, b_val = fm.train_val_split(ds, 20, seed=3)
    assert torch.equal(a_val.labels, b_val.labels) and len(a_val) == 20 and len(a_train) == 80
    assert not set(a_val.labels.tolist()) & set(a_train.labels.tolist())
    with pytest.raises(ValueError, match="val_size"):
        fm.train_val_split(ds, 100)


def test_to_float_normalises() -> None:
    x = torch.tensor([0, 255], dtype=torch.uint8).reshape(1, 1, 1, 2)
    out = fm.to_float(x)
    expected = (torch.tensor([0.0, 1.0]) - fm.MEAN) / fm.STD
    assert torch.allclose(out.flatten(), expected)


@needs_fashion
def test_real_fashion_mnist() -> None:
    train = fm.load_fashion_mnist("train", download_missing=False)
    test = fm.load_fashion_mnist("test", download_missing=False)
    assert train.images.shape == (60_000, 1, 28, 28) and len(test) == 10_000
    assert torch.bincount(test.labels).tolist() == [1000] * 10
    mean = train.images.float().mean().item() / 255
    assert abs(mean - fm.MEAN) < 1e-3
