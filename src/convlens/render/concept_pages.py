"""The concepts folder ``convlens concepts`` writes (``concepts.json`` with every number
and the concepts' directions, ``concepts.md``, the figures), reading it back, and the
concept cards it adds to a dissection's atlas."""

from __future__ import annotations

import dataclasses
import html
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from convlens.core.fileio import atomic_directory, atomic_write_bytes, atomic_write_text
from convlens.interpret.concepts.discover import ConceptGroup, Concepts, ConceptSettings
from convlens.render import concept_figures, figure
from convlens.render.atlas import read_atlas

BOX = (255, 127, 14)  # matplotlib's C1, as the card figures outline the regions


def group_name(group: int | None, names: Sequence[str]) -> str:
    """The class a group's images are of, or ``all images``."""
    if group is None:
        return "all images"
    return names[group] if group < len(names) else str(group)


def concept_strip(
    exemplars: torch.Tensor, boxes: torch.Tensor, picture: torch.Tensor | None, side: int = 96
) -> np.ndarray:
    """``[side, n * side, 3]`` uint8: the concept's picture (if any), then its exemplars
    (``[top, c, H, W]`` in [0, 1]) each with its region (``boxes`` ``[top, 4]``, input
    pixels) outlined."""
    tiles = []
    if picture is not None:
        tiles.append(_tile(picture, side))
    height, width = exemplars.shape[-2:]
    for image, box in zip(exemplars, boxes, strict=True):
        tile = _tile(image, side)
        y0, x0, y1, x1 = (int(v) for v in box)
        sy, sx = side / height, side / width
        top, left = int(y0 * sy), int(x0 * sx)
        bottom, right = min(side, round(y1 * sy)) - 1, min(side, round(x1 * sx)) - 1
        for a, b in ((top, top + 2), (bottom - 1, bottom + 1)):
            tile[max(a, 0) : b, left : right + 1] = BOX
        for a, b in ((left, left + 2), (right - 1, right + 1)):
            tile[top : bottom + 1, max(a, 0) : b] = BOX
        tiles.append(tile)
    gap = np.full((side, 4, 3), 255, dtype=np.uint8)
    return np.concatenate([t for tile in tiles for t in (tile, gap)][:-1], axis=1)


def _tile(image: torch.Tensor, side: int) -> np.ndarray:
    up = F.interpolate(image[None].float(), size=(side, side), mode="bilinear",
                       align_corners=False)[0]  # fmt: skip
    rgb = up.expand(3, -1, -1) if up.shape[0] == 1 else up[:3]
    return (rgb.clamp(0, 1).permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)


def to_json(found: Concepts, names: Sequence[str], model: str) -> dict[str, Any]:
    """Everything found, as plain numbers (the concepts' directions included)."""

    def rows(t: torch.Tensor) -> list[list[float]]:
        return [[round(float(v), 7) for v in r] for r in t.tolist()]

    return {
        "model": model,
        "layer": found.layer,
        "shift": found.shift,
        "settings": dataclasses.asdict(found.settings),
        "class_names": list(names),
        "groups": [
            {
                "group": g.group,
                "name": group_name(g.group, names),
                "error": g.error,
                "classes": list(g.classes),
                "sobol": rows(g.sobol),
                "gradient": rows(g.gradient),
                "deletion": rows(g.deletion),
                "insertion": rows(g.insertion),
                "random_insertion": [float(v) for v in g.random_insertion],
                "exemplars": g.exemplars.tolist(),
                "boxes": g.boxes.tolist(),
                "bank": rows(g.bank),
            }
            for g in found.groups
        ],
    }


def read_concepts(folder: str | os.PathLike[str]) -> tuple[Concepts, list[str], str]:
    """``(concepts, class names, model)`` from a ``convlens concepts`` folder.

    Raises:
        ValueError: no concepts there, or an unreadable file.
    """
    path = Path(folder) / "concepts.json"
    if not path.is_file():
        raise ValueError(f"{folder} holds no concepts (no concepts.json); run convlens concepts")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        groups = [
            ConceptGroup(
                g["group"],
                torch.tensor(g["bank"]),
                float(g["error"]),
                tuple(g["classes"]),
                torch.tensor(g["sobol"]),
                torch.tensor(g["gradient"]),
                torch.tensor(g["deletion"]),
                torch.tensor(g["insertion"]),
                torch.tensor(g["random_insertion"]),
                torch.tensor(g["exemplars"]),
                torch.tensor(g["boxes"]),
            )
            for g in meta["groups"]
        ]
        found = Concepts(meta["layer"], groups, float(meta["shift"]),
                         ConceptSettings(**meta["settings"]))  # fmt: skip
        return found, list(meta["class_names"]), str(meta["model"])
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path} is not a convlens concepts file ({e})") from e


def write_concepts(
    found: Concepts,
    exemplars: Sequence[torch.Tensor],
    pictures: Sequence[torch.Tensor | None],
    names: Sequence[str],
    out: str | os.PathLike[str],
    model: str,
    maps: figure.Figure | None = None,
) -> Path:
    """The folder ``out`` (replaced whole, or left as it was on an error):
    ``concepts.json``, ``concepts.md``, ``cards-<class>.png`` per group (``exemplars``:
    each group's ``[k, top, c, H, W]`` images in [0, 1]; ``pictures``: its ``[k, c, h, w]``
    feature visualisations or ``None``), ``curves.png`` and ``maps.png`` (``maps``)."""
    title = f"concepts of {model} {found.layer}"
    with atomic_directory(out) as tmp:
        atomic_write_text(tmp / "concepts.json", json.dumps(to_json(found, names, model)))
        tables = [g.table(names) for g in found.groups]
        atomic_write_text(tmp / "concepts.md", "\n\n".join(tables) + "\n")
        for group, shown, picture in zip(found.groups, exemplars, pictures, strict=True):
            fig = concept_figures.draw_concept_cards(group, shown, picture, names, title)
            figure.save_figure(fig, tmp / f"cards-{_tag(group)}.png")
            for i in range(len(group.bank)):
                pic = None if picture is None else picture[i]
                strip = concept_strip(shown[i], group.boxes[i], pic)
                atomic_write_bytes(tmp / f"strip-{_tag(group)}-{i}.png", figure.png_bytes(strip))
        fig = concept_figures.draw_concept_curves(found, names, title)
        figure.save_figure(fig, tmp / "curves.png")
        if maps is not None:
            figure.save_figure(maps, tmp / "maps.png")
    return Path(out)


def _tag(group: ConceptGroup) -> str:
    return "all" if group.group is None else str(group.group)


def _concept_card(group: ConceptGroup, i: int, names: Sequence[str], src: str) -> str:
    order = torch.argsort(torch.nan_to_num(group.sobol[:, i]), descending=True).tolist()
    best = group.classes[order[0]]
    score = float(torch.nan_to_num(group.sobol[order[0], i]))
    importance = " · ".join(
        f"{html.escape(group_name(group.classes[r], names))} {float(group.sobol[r, i]):.2f}"
        for r in order[:3]
    )
    owner = html.escape(group_name(group.group, names))
    return (
        f'<div class="card concept" data-unit="{i}" data-score="{score:.6f}" '
        f'data-text="{html.escape(group_name(best, names).lower())} concept">'
        f'<h3>concept {i} <span class="label">of {owner}</span></h3>'
        f'<p class="meta">Sobol importance: {importance}</p>'
        f'<img src="{html.escape(src)}" alt="picture and exemplars of concept {i} of {owner}" '
        'loading="lazy"></div>'
    )


_SECTION = re.compile(r"<!-- concepts -->.*?<!-- /concepts -->", re.S)


def add_concepts_to_atlas(
    found: Concepts, concepts_folder: str | os.PathLike[str], names: Sequence[str],
    atlas: str | os.PathLike[str],
) -> int:  # fmt: skip
    """Put a card per concept (its picture and exemplars, its importance per class)
    above the unit cards of the dissection atlas ``atlas`` of the same layer, replacing
    earlier concept cards; the strips are copied into ``atlas/concepts``. Returns how
    many cards."""
    atlas = Path(atlas)
    meta = read_atlas(atlas)
    if meta["layer"] != found.layer:
        raise ValueError(
            f"the atlas {atlas} is of layer {meta['layer']!r}, the concepts of "
            f"{found.layer!r}: find concepts in the atlas's layer (`layer`)"
        )
    cards = []
    for group in found.groups:
        for i in concept_figures.concept_order(group):
            name = f"strip-{_tag(group)}-{i}.png"
            data = (Path(concepts_folder) / name).read_bytes()
            atomic_write_bytes(atlas / "concepts" / name, data)
            cards.append(_concept_card(group, i, names, f"concepts/{name}"))
    section = (
        '<!-- concepts --><h2>Concepts</h2><p class="meta">Directions across the units, '
        f"found by NMF ({len(found.groups)} factorisation(s), k = {found.settings.k}); each "
        "card: the concept's picture, its exemplars with the region outlined, its Sobol "
        "importance for the classes. Written by <code>convlens concepts</code>.</p>"
        f'<div class="grid">{"".join(cards)}</div><h2>Units</h2><!-- /concepts -->'
    )
    page = (atlas / "index.html").read_text(encoding="utf-8")
    if _SECTION.search(page):
        page = _SECTION.sub(lambda _: section, page, count=1)
    else:
        page = page.replace('<div class="controls">', section + '<div class="controls">', 1)
    atomic_write_text(atlas / "index.html", page)
    return len(cards)


__all__ = [
    "add_concepts_to_atlas",
    "concept_strip",
    "group_name",
    "read_concepts",
    "to_json",
    "write_concepts",
]
