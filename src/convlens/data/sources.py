"""Data sets streamed in batches for data-set-level analysis (dissection, faithfulness).

A source knows its size and class names, yields :class:`SourceBatch`\\ es of model
inputs with their data-set indices (and labels, and segmentations for Broden), and
gives any image back for display. Three kinds: a FashionMNIST split (``test``,
``train``, ``val``), a folder of images (recursive; classes from sub-folder names as in
torchvision's ``ImageFolder``), and a Broden data set (:mod:`convlens.data.broden`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from convlens.data import fashion_mnist
from convlens.data.images import Preprocessing, open_image, preprocess, to_display

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
SPLITS = ("test", "train", "val")


@dataclass
class SourceBatch:
    """Model inputs of some images of a source, and what is known about them."""

    x: torch.Tensor  # [B, C, H, W] normalised model inputs
    index: torch.Tensor  # [B] positions of the images in the source
    labels: torch.Tensor | None = None  # [B] class indices, when the source has classes
    # Broden only: per image, [D, sh, sw] int64 label numbers (0 = none) and the
    # categories those layers belong to
    segmentations: list[torch.Tensor] = field(default_factory=list)
    seg_categories: list[list[str]] = field(default_factory=list)


class Source:
    """A data set to stream. Subclasses set the fields and implement the two methods."""

    description: str = ""
    classes: tuple[str, ...] = ()  # empty when the images carry no class labels

    def __len__(self) -> int:
        raise NotImplementedError

    def batches(
        self, batch_size: int, workers: int = 0, start: int = 0, stop: int | None = None
    ) -> Iterator[SourceBatch]:
        """Images ``start`` to ``stop`` (default: all), ``batch_size`` at a time, read by
        ``workers`` processes (0: in this one)."""
        raise NotImplementedError

    def display(self, i: int) -> torch.Tensor:
        """Image ``i`` as the model sees it (size and crop), ``[C, H, W]`` in [0, 1]."""
        raise NotImplementedError

    def name(self, i: int) -> str:
        """How image ``i`` is called in tables: ``test:17`` or a file path."""
        raise NotImplementedError

    # files that could not be read and were left out, filled while streaming
    skipped: list[str]


class TensorSource(Source):
    """Inputs already in memory (``[N, C, H, W]``, normalised), with optional labels."""

    def __init__(
        self,
        x: torch.Tensor,
        labels: torch.Tensor | None = None,
        classes: Sequence[str] = (),
        preprocessing: Preprocessing | None = None,
        description: str = "tensors",
        limit: int | None = None,
    ) -> None:
        if limit is not None:
            x, labels = x[:limit], None if labels is None else labels[:limit]
        if x.ndim != 4:
            raise ValueError(f"inputs must be [N, C, H, W], got shape {tuple(x.shape)}")
        if labels is not None and labels.shape != (x.shape[0],):
            raise ValueError(f"labels must be [N] with N={x.shape[0]}")
        self.x, self.labels, self.classes = x, labels, tuple(classes)
        self.preprocessing = preprocessing
        self.description = description
        self.skipped = []

    def __len__(self) -> int:
        return self.x.shape[0]

    def batches(
        self, batch_size: int, workers: int = 0, start: int = 0, stop: int | None = None
    ) -> Iterator[SourceBatch]:
        end = len(self) if stop is None else min(stop, len(self))
        for first in range(start, end, batch_size):
            idx = torch.arange(first, min(first + batch_size, end), device="cpu")
            labels = None if self.labels is None else self.labels[idx]
            yield SourceBatch(self.x[idx], idx, labels)

    def display(self, i: int) -> torch.Tensor:
        x = self.x[i]
        if self.preprocessing is not None:
            return to_display(x, self.preprocessing)
        lo, hi = x.min(), x.max()
        return (x - lo) / (hi - lo) if hi > lo else torch.zeros_like(x)

    def name(self, i: int) -> str:
        return f"#{i}"


class FashionSplit(TensorSource):
    """A FashionMNIST split: ``test`` (10k), ``train`` (the 50k training images after the
    validation hold-out) or ``val`` (the 10k held out, as training holds them out)."""

    def __init__(
        self,
        split: str,
        data_dir: str | os.PathLike[str] | None = None,
        limit: int | None = None,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"unknown FashionMNIST split {split!r}; use {', '.join(SPLITS)}")
        if split == "test":
            data = fashion_mnist.load_fashion_mnist("test", data_dir)
        else:
            train, val = fashion_mnist.train_val_split(
                fashion_mnist.load_fashion_mnist("train", data_dir)
            )
            data = train if split == "train" else val
        self.split = split
        self.images = data.images[:limit]
        super().__init__(
            self.images,
            data.labels[:limit],
            fashion_mnist.CLASSES,
            fashion_mnist.PREPROCESSING,
            f"FashionMNIST {split}",
        )

    def batches(
        self, batch_size: int, workers: int = 0, start: int = 0, stop: int | None = None
    ) -> Iterator[SourceBatch]:
        for batch in super().batches(batch_size, workers, start, stop):  # uint8 in, float out
            batch.x = fashion_mnist.to_float(batch.x)
            yield batch

    def display(self, i: int) -> torch.Tensor:
        return self.images[i].float() / 255.0

    def name(self, i: int) -> str:
        return f"{self.split}:{i}"


class _Files(torch.utils.data.Dataset[Any]):
    """Files read in DataLoader workers; an unreadable one comes back as ``None``."""

    def __init__(self, files: Sequence[Path], preprocessing: Preprocessing) -> None:
        self.files, self.preprocessing = files, preprocessing

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor | None]:
        try:
            img = open_image(self.files[i], self.preprocessing.channels)
        except ValueError:  # unreadable, not an image, or over the pixel limit
            return i, None
        return i, preprocess(img, self.preprocessing)


def _collate(items: list[tuple[int, torch.Tensor | None]]) -> list[tuple[int, Any]]:
    return items


class FolderSource(Source):
    """Every image file under ``root`` (recursively), preprocessed for the model. When
    the images sit in sub-folders of ``root``, each sub-folder is a class, as in
    torchvision's ``ImageFolder``. Unreadable files are skipped and listed in
    :attr:`skipped`: one bad file should not end a pass over thousands."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        preprocessing: Preprocessing,
        limit: int | None = None,
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise ValueError(f"{self.root} is not a folder")
        self.files = sorted(
            f for f in self.root.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES
        )[:limit]
        if not self.files:
            raise ValueError(
                f"{self.root}: no image files ({', '.join(IMAGE_SUFFIXES)}) in it or below"
            )
        self.preprocessing = preprocessing
        tops = [f.relative_to(self.root).parts for f in self.files]
        if all(len(parts) > 1 for parts in tops):
            self.classes = tuple(sorted({parts[0] for parts in tops}))
            lookup = {c: k for k, c in enumerate(self.classes)}
            self.labels: torch.Tensor | None = torch.tensor([lookup[p[0]] for p in tops])
        else:
            self.classes, self.labels = (), None
        self.description = str(self.root)
        self.skipped = []

    def __len__(self) -> int:
        return len(self.files)

    def batches(
        self, batch_size: int, workers: int = 0, start: int = 0, stop: int | None = None
    ) -> Iterator[SourceBatch]:
        loader = torch.utils.data.DataLoader(
            span(_Files(self.files, self.preprocessing), start, stop),
            batch_size=batch_size,
            num_workers=workers,
            collate_fn=_collate,
        )
        for items in loader:
            good = [(i, x) for i, x in items if x is not None]
            self.skipped += [str(self.files[i]) for i, x in items if x is None]
            if not good:
                continue
            idx = torch.tensor([i for i, _ in good], device="cpu")
            labels = None if self.labels is None else self.labels[idx]
            yield SourceBatch(torch.stack([x for _, x in good]), idx, labels)

    def display(self, i: int) -> torch.Tensor:
        x = preprocess(open_image(self.files[i], self.preprocessing.channels), self.preprocessing)
        return to_display(x, self.preprocessing)

    def name(self, i: int) -> str:
        return str(self.files[i].relative_to(self.root))


def span(dataset: Any, start: int, stop: int | None) -> Any:
    """Items ``start`` to ``stop`` of ``dataset`` (each still says its own position)."""
    if start == 0 and stop is None:
        return dataset
    end = len(dataset) if stop is None else min(stop, len(dataset))
    return torch.utils.data.Subset(dataset, range(start, end))


__all__ = [
    "IMAGE_SUFFIXES",
    "SPLITS",
    "FashionSplit",
    "FolderSource",
    "Source",
    "SourceBatch",
    "TensorSource",
]
