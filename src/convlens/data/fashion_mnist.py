"""FashionMNIST: finding, verifying, downloading and parsing the IDX files.

The data set lives in memory as tensors: ``uint8`` images ``[N, 1, 28, 28]`` and
``int64`` labels ``[N]``. Batching and augmentation are tensor code elsewhere
(:mod:`convlens.augment`, :mod:`convlens.train`).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from convlens.core.fileio import atomic_write_bytes, fetch_url, user_cache_dir
from convlens.data.images import Inputs, Preprocessing

CLASSES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

# Mean and standard deviation of the 60k training images scaled to [0, 1].
MEAN = 0.2860
STD = 0.3530

MIRROR = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
# The four official files and their published MD5 checksums
# (github.com/zalandoresearch/fashion-mnist, README "Get the Data").
FILES: dict[str, tuple[str, str]] = {
    "train-images": ("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
    "train-labels": ("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe"),
    "test-images": ("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79"),
    "test-labels": ("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310"),
}
SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
SPLIT_SIZES = {"train": 60_000, "test": 10_000}

_IDX_MAGIC_IMAGES = 0x00000803  # unsigned byte, 3 dimensions
_IDX_MAGIC_LABELS = 0x00000801  # unsigned byte, 1 dimension


class DataError(ValueError):
    """A data file is missing, truncated or not what it claims to be."""


@dataclass(frozen=True)
class Dataset:
    """Images, labels and class names of one split, all in memory."""

    images: torch.Tensor  # uint8 [N, 1, 28, 28]
    labels: torch.Tensor  # int64 [N]
    classes: tuple[str, ...] = CLASSES

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, index: torch.Tensor | slice) -> Dataset:
        return Dataset(self.images[index], self.labels[index], self.classes)


def _read_gz(path: Path) -> bytes:
    try:
        with gzip.open(path, "rb") as f:
            return f.read()
    except (OSError, EOFError) as e:
        raise DataError(
            f"{path}: cannot decompress ({e}); the file is truncated or corrupt, "
            "delete it and let convlens download it again"
        ) from e


def parse_idx(data: bytes, name: str = "<bytes>", expect_ndim: int | None = None) -> torch.Tensor:
    """Parse an uncompressed IDX file of unsigned bytes into a ``uint8`` tensor.

    Args:
        data: the file's bytes (after gunzip).
        name: used in error messages.
        expect_ndim: the number of dimensions the file must have (1 labels, 3 images).

    Raises:
        DataError: wrong magic number, wrong dimension count, or a length that
            does not match the header.
    """
    if len(data) < 4:
        raise DataError(f"{name}: too short to be an IDX file ({len(data)} bytes)")
    zero, dtype, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype != 0x08:
        raise DataError(
            f"{name}: bad IDX magic number 0x{int.from_bytes(data[:4], 'big'):08x} "
            "(expected unsigned-byte data, 0x0000080N); the file is not an IDX file"
        )
    if expect_ndim is not None and ndim != expect_ndim:
        raise DataError(f"{name}: IDX file has {ndim} dimensions, expected {expect_ndim}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{name}: truncated IDX header")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    count = 1
    for d in shape:
        count *= d
    if len(data) - header != count:
        raise DataError(
            f"{name}: header announces shape {tuple(shape)} ({count} bytes of data) but the "
            f"file holds {len(data) - header}; it is truncated or corrupt, delete it and "
            "fetch it again"
        )
    t = torch.frombuffer(bytearray(data[header:]), dtype=torch.uint8)
    return t.reshape(shape)


def md5sum(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def candidate_dirs(data_dir: str | os.PathLike[str] | None = None) -> list[Path]:
    """The folders searched for the four ``.gz`` files, in order."""
    dirs: list[Path] = []
    if data_dir is not None:
        dirs.append(Path(data_dir))
    env = os.environ.get("CONVLENS_DATA")
    if env:
        dirs.append(Path(env))
    dirs.append(user_cache_dir() / "fashion-mnist")
    dirs.append(SYSTEM_DIR)
    return dirs


def find_data_dir(data_dir: str | os.PathLike[str] | None = None) -> Path | None:
    """First candidate folder that holds all four files, or ``None``."""
    for d in candidate_dirs(data_dir):
        if all((d / fname).is_file() for fname, _ in FILES.values()):
            return d
    return None


def download(dest: Path, base_url: str = MIRROR, progress: bool = True) -> Path:
    """Download the four official files into ``dest``, checking their MD5 sums.

    Raises:
        DataError: a download failed or its checksum is wrong.
    """
    dest.mkdir(parents=True, exist_ok=True)
    for fname, md5 in FILES.values():
        target = dest / fname
        if target.is_file() and md5sum(target) == md5:
            continue
        url = base_url + fname
        try:
            body = fetch_url(url, progress=progress, desc=fname)
        except ValueError as e:
            raise DataError(
                f"{e}. FashionMNIST was not found locally; get it with "
                "`apt-get install dataset-fashion-mnist` (Debian), or put the four .gz files in "
                "a folder and pass it as `data_dir` or set CONVLENS_DATA"
            ) from e
        got = hashlib.md5(body).hexdigest()
        if got != md5:
            raise DataError(f"{url}: MD5 {got} does not match the published {md5}")
        atomic_write_bytes(target, body)
    return dest


def load_fashion_mnist(
    split: str,
    data_dir: str | os.PathLike[str] | None = None,
    download_missing: bool = True,
) -> Dataset:
    """Load one split of FashionMNIST.

    Looks in ``data_dir``, ``$CONVLENS_DATA``, the user cache and
    ``/usr/share/datasets/fashion-mnist``; when none holds the files, downloads them
    into the user cache (MD5-checked).

    Args:
        split: ``"train"`` (60k images) or ``"test"`` (10k images).
        data_dir: an extra folder searched first.
        download_missing: download when the files are found nowhere.

    Returns:
        A :class:`Dataset` with uint8 images ``[N, 1, 28, 28]`` and int64 labels.

    Raises:
        ValueError: unknown split.
        DataError: files missing (and not downloadable) or corrupt.
    """
    if split not in SPLIT_SIZES:
        raise ValueError(f"unknown split {split!r}; use 'train' or 'test'")
    found = find_data_dir(data_dir)
    if found is None:
        if not download_missing:
            searched = ", ".join(str(d) for d in candidate_dirs(data_dir))
            raise DataError(
                f"FashionMNIST not found (searched {searched}); install it with "
                "`apt-get install dataset-fashion-mnist` or pass its folder as `data_dir`"
            )
        found = download(user_cache_dir() / "fashion-mnist")
    prefix = "train" if split == "train" else "test"
    img_path = found / FILES[f"{prefix}-images"][0]
    lbl_path = found / FILES[f"{prefix}-labels"][0]
    images = parse_idx(_read_gz(img_path), str(img_path), expect_ndim=3)
    labels = parse_idx(_read_gz(lbl_path), str(lbl_path), expect_ndim=1)
    n = SPLIT_SIZES[split]
    if images.shape != (n, 28, 28):
        raise DataError(f"{img_path}: expected {n} images of 28x28, found {tuple(images.shape)}")
    if labels.shape != (n,):
        raise DataError(f"{lbl_path}: expected {n} labels, found {labels.shape[0]}")
    if int(labels.max()) >= len(CLASSES):
        raise DataError(f"{lbl_path}: label {int(labels.max())} out of range 0..9")
    return Dataset(images.unsqueeze(1).contiguous(), labels.long())


def train_val_split(
    train: Dataset, val_size: int = 10_000, seed: int = 0
) -> tuple[Dataset, Dataset]:
    """Hold out ``val_size`` images of the training set, chosen by a seeded permutation."""
    if not 0 <= val_size < len(train):
        raise ValueError(f"val_size must be in [0, {len(train)}), got {val_size}")
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(train), generator=g)
    return train.subset(perm[val_size:]), train.subset(perm[:val_size])


def to_float(images: torch.Tensor, device: torch.device | str | None = None) -> torch.Tensor:
    """uint8 ``[N, 1, H, W]`` -> normalised float32: ``(x / 255 - MEAN) / STD``.

    Float tensors are returned unchanged (assumed already normalised).
    """
    if images.dtype != torch.uint8:
        return images.to(device) if device is not None else images
    x = images.to(device=device, dtype=torch.float32)
    return x.mul_(1.0 / (255.0 * STD)).sub_(MEAN / STD)


# How FashionMNIST models read an image file: 28x28 grayscale, the set's statistics.
PREPROCESSING = Preprocessing(kind="fashion-mnist", channels=1, size=28, mean=(MEAN,), std=(STD,))


def as_inputs(dataset: Dataset, indices: Sequence[int], prefix: str = "test") -> Inputs:
    """Images ``indices`` of ``dataset`` as model inputs named ``test:N``, with their
    labels.

    Raises:
        IndexError: an index outside the data set.
    """
    bad = [i for i in indices if not 0 <= i < len(dataset)]
    if bad:
        raise IndexError(f"{prefix} images {bad} do not exist: N must be in 0..{len(dataset) - 1}")
    idx = torch.tensor(list(indices), dtype=torch.long)
    return Inputs(
        to_float(dataset.images[idx]),
        tuple(f"{prefix}:{i}" for i in indices),
        ((28, 28),) * len(indices),
        tuple(int(dataset.labels[i]) for i in indices),
    )


__all__ = [
    "CLASSES",
    "FILES",
    "MEAN",
    "MIRROR",
    "PREPROCESSING",
    "SPLIT_SIZES",
    "STD",
    "SYSTEM_DIR",
    "DataError",
    "Dataset",
    "as_inputs",
    "candidate_dirs",
    "download",
    "find_data_dir",
    "load_fashion_mnist",
    "md5sum",
    "parse_idx",
    "to_float",
    "train_val_split",
]
