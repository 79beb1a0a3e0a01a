"""Data sets in the Broden format of Network Dissection (Bau et al., 2017).

A Broden folder holds (NetDissect's ``loadseg.py`` and its README):

- ``index.csv``: one row per image: ``image`` (a path under ``images/``), ``split``,
  ``ih, iw`` (image size), ``sh, sw`` (segmentation size), then one column per
  category (``color``, ``object``, ``part``, ``material``, ``scene``, ``texture``).
  A category cell lists, separated by ``;``, segmentation PNGs (paths under
  ``images/``) or whole-image label numbers.
- ``label.csv``: ``number, name, category, frequency, coverage, syns``; ``category``
  reads ``object(12);part(3)``: the categories a label belongs to.
- ``category.csv`` and ``c_<category>.csv``: per-category dense codes. convlens reads
  labels by their full number, as NetDissect does with ``full=True``; ``category.csv``,
  when present, limits the categories used. ``c_<category>.csv`` (``code, number, name,
  frequency, coverage``) gives each label's coverage in that category: a label listed
  under several categories counts under its **primary** one only, the category where
  its coverage is largest (NetDissect-Lite's rule; without the ``c_`` files, the counts
  in ``label.csv``'s ``object(12)`` stand in for the coverage).

A segmentation PNG's pixel label is ``R + 256 * G``; 0 means unlabelled.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from convlens.data.images import Preprocessing, open_image, preprocess, to_display
from convlens.data.sources import Source, SourceBatch, span

META_COLUMNS = ("image", "split", "ih", "iw", "sh", "sw")
_CATEGORY = re.compile(r"^([^(]*)\(([^)]*)\)$")


class BrodenError(ValueError):
    """A Broden folder that is incomplete or inconsistent."""


@dataclass(frozen=True)
class Concept:
    """One label of a Broden data set: the categories it is listed under, and the one it
    counts under (``primary``, where its coverage is largest)."""

    number: int
    name: str
    categories: tuple[str, ...]
    primary: str = ""


@dataclass(frozen=True)
class _Row:
    image: str
    seg_size: tuple[int, int]  # (sh, sw)
    cells: dict[str, list[str | int]]  # category -> PNG paths or whole-image labels


def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        raise BrodenError(f"{path.parent} is not a Broden data set: {path.name} is missing")
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def read_concepts(path: Path, categories: list[str] | None = None) -> list[Concept]:
    """The labels of ``label.csv`` (number 0, "unlabelled", left out), each with its
    primary category among ``categories`` (default: all it is listed under): the one
    with the largest coverage in ``c_<category>.csv`` beside ``label.csv``, else the
    largest count in ``label.csv``'s ``category(count)``; a tie goes to the category
    listed last in ``categories``."""
    listed: list[tuple[int, str, dict[str, float]]] = []
    for line, row in enumerate(_read_csv(path), start=2):
        try:
            number = int(row["number"])
            counts = {
                m.group(1): float(m.group(2) or 0)
                for part in (row.get("category") or "").split(";")
                if part and (m := _CATEGORY.match(part))
            }
        except (KeyError, ValueError) as e:
            raise BrodenError(f"{path}:{line}: expected number,name,category,... ({e})") from e
        if number > 0:
            listed.append((number, row.get("name", str(number)), counts))
    if not listed:
        raise BrodenError(f"{path} lists no labels")
    order = categories if categories is not None else sorted({c for *_, k in listed for c in k})
    coverage = _coverages(path.parent, order)
    concepts = []
    for number, name, counts in listed:
        cats = tuple(counts)
        weight = {c: coverage[c].get(number, 0.0) if c in coverage else counts[c] for c in cats}
        ranked = [(weight[c], order.index(c)) for c in cats if c in order]
        primary = order[max(ranked)[1]] if ranked else ""
        concepts.append(Concept(number, name, cats, primary))
    return concepts


def _coverages(root: Path, categories: list[str]) -> dict[str, dict[int, float]]:
    """``{category: {label number: coverage}}`` from the ``c_<category>.csv`` files
    that exist."""
    found: dict[str, dict[int, float]] = {}
    for cat in categories:
        path = root / f"c_{cat}.csv"
        if not path.is_file():
            continue
        try:
            found[cat] = {int(r["number"]): float(r["coverage"]) for r in _read_csv(path)}
        except (KeyError, ValueError) as e:
            raise BrodenError(f"{path}: expected code,number,name,frequency,coverage ({e})") from e
    return found


def _read_index(path: Path, categories: list[str]) -> list[_Row]:
    rows = []
    for line, row in enumerate(_read_csv(path), start=2):
        try:
            seg_size = (int(row["sh"]), int(row["sw"]))
            cells: dict[str, list[str | int]] = {}
            for cat in categories:
                items = [s for s in (row.get(cat) or "").split(";") if s]
                cells[cat] = [int(s) if s.isdigit() else s for s in items]
            rows.append(_Row(row["image"], seg_size, cells))
        except (KeyError, ValueError, TypeError) as e:
            raise BrodenError(
                f"{path}:{line}: expected image,split,ih,iw,sh,sw,<categories> ({e})"
            ) from e
    if not rows:
        raise BrodenError(f"{path} lists no images")
    return rows


def decode_segmentation(path: Path, size: tuple[int, int]) -> np.ndarray:
    """A segmentation PNG as label numbers ``R + 256 * G``, ``[sh, sw]`` int64.

    Raises:
        BrodenError: unreadable, or not ``size`` = ``(sh, sw)`` as ``index.csv`` says.
    """
    try:
        with Image.open(path) as im:
            rgb = np.asarray(im.convert("RGB"), dtype=np.int64)
    except (OSError, ValueError) as e:
        raise BrodenError(f"segmentation {path} is not a readable PNG ({e})") from e
    if rgb.shape[:2] != size:
        raise BrodenError(
            f"segmentation {path} is {rgb.shape[1]}x{rgb.shape[0]} but index.csv says "
            f"sw x sh = {size[1]}x{size[0]}; fix the file or its row"
        )
    return rgb[:, :, 0] + 256 * rgb[:, :, 1]


class _Items(torch.utils.data.Dataset[Any]):
    def __init__(self, source: BrodenSource) -> None:
        self.source = source

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int) -> tuple[int, Any, Any, list[str], str | None]:
        src = self.source
        row = src.rows[i]
        try:
            img = open_image(src.root / "images" / row.image, src.preprocessing.channels)
        except ValueError:
            return i, None, None, [], None
        layers, cats = [], []
        try:
            for cat, items in row.cells.items():
                for item in items:
                    if isinstance(item, int):
                        layers.append(np.full(row.seg_size, item, dtype=np.int64))
                    else:
                        layers.append(decode_segmentation(src.root / "images" / item, row.seg_size))
                    cats.append(cat)
        except BrodenError as e:  # raised in the main process, as one line
            return i, None, None, [], str(e)
        seg = torch.from_numpy(np.stack(layers)) if layers else torch.zeros(0, *row.seg_size)
        return i, preprocess(img, src.preprocessing), seg.long(), cats, None


def _collate(items: list[Any]) -> list[Any]:
    return items


class BrodenSource(Source):
    """The images of a Broden folder, resized whole to the model's input (no crop, so
    that the segmentations still cover the image), with their segmentations."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        preprocessing: Preprocessing,
        limit: int | None = None,
    ) -> None:
        self.root = Path(root)
        if not (self.root / "index.csv").is_file():
            raise BrodenError(
                f"{self.root} is not a Broden data set: index.csv is missing "
                "(see NetDissect's script/dlbroden.sh for the real one)"
            )
        with open(self.root / "index.csv", newline="", encoding="utf-8") as f:
            header = next(csv.reader(f), [])
        missing = [c for c in ("image", "sh", "sw") if c not in header]
        if missing:
            raise BrodenError(f"{self.root / 'index.csv'} has no column {', '.join(missing)}")
        self.categories = [c for c in header if c not in META_COLUMNS]
        if (self.root / "category.csv").is_file():
            listed = {r.get("name") for r in _read_csv(self.root / "category.csv")}
            self.categories = [c for c in self.categories if c in listed]
        self.concepts = read_concepts(self.root / "label.csv", self.categories)
        self.rows = _read_index(self.root / "index.csv", self.categories)[:limit]
        side = preprocessing.input_size[0]
        self.preprocessing = preprocessing.replace(size=side)
        self.classes = ()
        self.description = f"Broden {self.root}"
        self.skipped = []

    def __len__(self) -> int:
        return len(self.rows)

    def batches(
        self, batch_size: int, workers: int = 0, start: int = 0, stop: int | None = None
    ) -> Iterator[SourceBatch]:
        loader = torch.utils.data.DataLoader(
            span(_Items(self), start, stop),
            batch_size=batch_size,
            num_workers=workers,
            collate_fn=_collate,
        )
        for items in loader:
            for _, _, _, _, error in items:
                if error:
                    raise BrodenError(error)
            good = [it for it in items if it[1] is not None]
            self.skipped += [self.rows[it[0]].image for it in items if it[1] is None]
            if good:
                yield SourceBatch(
                    torch.stack([it[1] for it in good]),
                    torch.tensor([it[0] for it in good]),
                    segmentations=[it[2] for it in good],
                    seg_categories=[it[3] for it in good],
                )

    def display(self, i: int) -> torch.Tensor:
        img = open_image(self.root / "images" / self.rows[i].image, self.preprocessing.channels)
        return to_display(preprocess(img, self.preprocessing), self.preprocessing)

    def name(self, i: int) -> str:
        return self.rows[i].image


__all__ = [
    "META_COLUMNS",
    "BrodenError",
    "BrodenSource",
    "Concept",
    "decode_segmentation",
    "read_concepts",
]
