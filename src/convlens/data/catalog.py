"""Which source a name on the command line means: a FashionMNIST split, a Broden data
set, or a folder of images (:mod:`convlens.data.sources`, :mod:`convlens.data.broden`)."""

from __future__ import annotations

import os
from pathlib import Path

from convlens.data import sources
from convlens.data.broden import BrodenSource
from convlens.data.images import Preprocessing


def open_source(
    spec: str,
    preprocessing: Preprocessing,
    data_dir: str | os.PathLike[str] | None = None,
    limit: int | None = None,
) -> sources.Source:
    """The source ``spec`` names: a FashionMNIST split (``test``, ``train``, ``val``), a
    Broden data set (a folder holding ``index.csv``), or a folder of images; its first
    ``limit`` images when given.

    Raises:
        ValueError: a split for a model that does not take 28x28 grayscale images, a
            path that does not exist, or a folder without images.
    """
    if spec in sources.SPLITS:
        if preprocessing.channels != 1 or preprocessing.size != 28:
            raise ValueError(
                f"{spec!r} is a FashionMNIST split, for 28x28 grayscale models only; "
                "give a folder of images"
            )
        return sources.FashionSplit(spec, data_dir, limit)
    path = Path(spec)
    if not path.exists():
        raise ValueError(
            f"{spec!r} is neither a FashionMNIST split ({', '.join(sources.SPLITS)}) nor a folder"
        )
    if not path.is_dir():
        raise ValueError(f"{spec} is a file; give a folder of images or a split")
    if (path / "index.csv").is_file() or (path / "label.csv").is_file():
        return BrodenSource(path, preprocessing, limit)
    return sources.FolderSource(path, preprocessing, limit)


__all__ = [
    "open_source",
]
