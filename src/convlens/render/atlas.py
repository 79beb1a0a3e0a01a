"""The unit atlas of a dissection: ``index.html`` (one card per unit, sortable), a strip
of each unit's top images with their thresholded maps (JPEG for colour images, PNG for
grey ones), a summary chart, and the
numbers as ``units.csv`` and ``units.json``. The folder is written whole or not at all.
"""

from __future__ import annotations

import csv
import html
import io
import json
import os
import re
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from convlens.core.fileio import atomic_directory, atomic_write_bytes, atomic_write_text
from convlens.core.progress import progress_bar
from convlens.data.sources import Source
from convlens.interpret.dissect import Dissection
from convlens.interpret.visualize import Visualization
from convlens.render import figure, unit_figures

CSV_FIELDS = (
    "unit", "label", "concept", "category", "iou", "top_class", "selectivity",
    "threshold", "top_images",
)  # fmt: skip


def overlay(image: torch.Tensor, unit_map: torch.Tensor, threshold: float, side: int) -> np.ndarray:
    """``image`` ``[C, H, W]`` in [0, 1] at ``side`` x ``side`` pixels, dimmed where the
    unit's map (bilinear to that size) is at or below ``threshold``, with the edge of
    the region above it drawn in yellow. Returns ``[side, side, 3]`` uint8."""
    img = F.interpolate(
        image[None].float(), size=(side, side), mode="bilinear", align_corners=False
    )
    rgb = img[0].expand(3, -1, -1) if image.shape[0] == 1 else img[0]
    up = F.interpolate(unit_map[None, None].float(), size=(side, side), mode="bilinear",
                       align_corners=False)[0, 0]  # fmt: skip
    inside = up > threshold
    grown = F.max_pool2d(inside[None, None].float(), 3, stride=1, padding=1)[0, 0] > 0
    edge = grown & ~inside
    out = torch.where(inside, rgb, rgb * 0.3)
    out[:, edge] = torch.tensor([1.0, 0.85, 0.0])[:, None]
    return (out.clamp(0, 1).permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)


STRIP_SUFFIXES = (".jpg", ".png")


def unit_strip(
    d: Dissection,
    source: Source,
    unit: int,
    side: int,
    fmt: str = "PNG",
    display: Callable[[int], torch.Tensor] | None = None,
) -> bytes:
    """The unit's top images side by side, each with its map thresholded, as ``fmt``
    bytes: ``PNG``, or ``JPEG`` (quality 90: a tenth of the time for photographs)."""
    show = display or source.display
    tiles = [
        overlay(show(int(i)), d.top_maps[unit, n], float(d.thresholds[unit]), side)
        for n, i in enumerate(d.top_index[unit])
    ]
    gap = np.full((side, 4, 3), 255, dtype=np.uint8)
    row = np.concatenate([t for tile in tiles for t in (tile, gap)][:-1], axis=1)
    buf = io.BytesIO()
    if fmt == "JPEG":
        Image.fromarray(row).save(buf, format="JPEG", quality=90)
    else:
        Image.fromarray(row).save(buf, format="PNG", compress_level=3)
    return buf.getvalue()


def strip_file(folder: str | os.PathLike[str], unit: int) -> Path | None:
    """The strip of ``unit`` in an atlas folder (``.jpg`` for colour sources, ``.png``
    for grey ones and atlases written before), or None."""
    for suffix in STRIP_SUFFIXES:
        path = Path(folder) / "units" / f"unit-{unit:04d}{suffix}"
        if path.is_file():
            return path
    return None


def _write_strips(d: Dissection, source: Source, folder: Path, side: int, progress: bool) -> str:
    """Every unit's strip into ``folder``, on every core (drawing and encoding release
    the GIL); each top image is read once. Returns the file suffix used."""
    shown = {i: source.display(i) for i in {int(i) for i in d.top_index.flatten()}}
    colour = int(next(iter(shown.values())).shape[0]) == 3
    fmt, suffix = ("JPEG", ".jpg") if colour else ("PNG", ".png")

    def one(u: int) -> None:
        data = unit_strip(d, source, u, side, fmt, shown.__getitem__)
        (folder / f"unit-{u:04d}{suffix}").write_bytes(data)

    bar = progress_bar(total=d.units, desc="atlas", unit="unit", disable=not progress)
    with ThreadPoolExecutor(max_workers=max(1, min(8, os.cpu_count() or 1))) as pool:
        for _ in pool.map(one, range(d.units)):
            bar.update()
    bar.close()
    return suffix


def summary_figure(d: Dissection) -> figure.Figure | None:
    """Units per concept (labelled units, when concepts were given) or per top class,
    split by how selective they are; None when the data had neither."""
    rows = d.unit_rows()
    fig = figure.Figure(figsize=(8, 3.6))
    ax = fig.subplots()
    if d.best_concept is not None:
        counts = Counter(r["label"] for r in rows if r["label"])
        if not counts:
            ax.text(0.5, 0.5, f"no unit reaches IoU {d.iou_threshold}", ha="center")
            ax.set_axis_off()
            return fig
        names = [n for n, _ in counts.most_common(25)]
        ax.bar(range(len(names)), [counts[n] for n in names], color="#4c72b0")
        ax.set_ylabel("units labelled")
        ax.set_title(f"{d.layer}: concepts detected (IoU >= {d.iou_threshold})", fontsize=10)
    elif d.class_means is not None:
        names = list(d.classes)
        strong = Counter(r["top_class"] for r in rows if r["selectivity"] >= 0.5)
        weak = Counter(r["top_class"] for r in rows if r["selectivity"] < 0.5)
        pos = range(len(names))
        ax.bar(pos, [strong[n] for n in names], color="#c44e52", label="selectivity >= 0.5")
        ax.bar(pos, [weak[n] for n in names], bottom=[strong[n] for n in names],
               color="#dd8452", alpha=0.45, label="selectivity < 0.5")  # fmt: skip
        ax.set_ylabel("units")
        ax.legend(fontsize=8, frameon=False)
        ax.set_title(f"{d.layer}: units by the class they respond to most", fontsize=10)
    else:
        return None
    ax.set_xticks(range(len(names)), names, rotation=40, ha="right", fontsize=8)
    ax.spines[["top", "right"]].set_visible(False)
    return fig


def _histogram_svg(means: list[float], classes: tuple[str, ...], top: int) -> str:
    """Mean activation per class as small bars, the top class in red."""
    w, h, n = 180, 40, len(means)
    hi = max(max(means), 1e-12)
    bar = w / n
    rects = "".join(
        f'<rect x="{k * bar + 1:.1f}" y="{h - max(v, 0) / hi * h:.1f}" width="{bar - 2:.1f}" '
        f'height="{max(v, 0) / hi * h:.1f}" fill="{"#c44e52" if k == top else "#9aa"}">'
        f"<title>{html.escape(classes[k])}: {v:.3g}</title></rect>"
        for k, v in enumerate(means)
    )
    return f'<svg class="hist" width="{w}" height="{h}" role="img">{rects}</svg>'


def _card(row: dict[str, Any], d: Dissection, suffix: str) -> str:
    u = row["unit"]
    score = unit_score(row)
    if "iou" in row:
        title = row["label"] or f"({row['concept']})"
        what = f"IoU {row['iou']:.3f} · {html.escape(row['category'])}"
    elif "selectivity" in row:
        title, what = row["top_class"], f"selectivity {row['selectivity']:.2f}"
    else:
        title, what = "", ""
    parts = [
        f'<div class="card" data-unit="{u}" data-score="{score:.6f}" '
        f'data-text="{html.escape(str(title).lower())}">',
        f'<h3>unit {u} <span class="label">{html.escape(str(title))}</span></h3>',
        f'<p class="meta">{what} · threshold {row["threshold"]:.3g}</p>',
        f'<img src="units/unit-{u:04d}{suffix}" alt="top images of unit {u}" loading="lazy">',
    ]
    if "class_means" in row and d.classes:
        top = d.classes.index(row["top_class"])
        parts.append(_histogram_svg(row["class_means"], d.classes, top))
    names = ", ".join(html.escape(n) for n in row["top_images"][:4])
    parts.append(f'<p class="names">{names}{" …" if len(row["top_images"]) > 4 else ""}</p>')
    return "".join(parts) + "</div>"


def write_atlas(
    d: Dissection,
    source: Source,
    out: str | os.PathLike[str],
    title: str,
    progress: bool = True,
) -> Path:
    """Write the atlas folder ``out`` (replacing it whole); returns its ``index.html``."""
    out = Path(out)
    rows = d.unit_rows()
    side = max(96, min(128, int(source.display(int(d.top_index[0, 0])).shape[-1])))
    with atomic_directory(out) as tmp:
        (tmp / "units").mkdir()
        suffix = _write_strips(d, source, tmp / "units", side, progress)
        fig = summary_figure(d)
        if fig is not None:
            figure.save_figure(fig, tmp / "summary.png", dpi=110)
        _write_tables(d, rows, tmp)
        order = sorted(rows, key=lambda r: -unit_score(r))
        page = _PAGE.format(
            title=html.escape(title),
            facts=html.escape(_facts(d)),
            summary='<img class="summary" src="summary.png" alt="summary">' if fig else "",
            cards="".join(_card(r, d, suffix) for r in order),
            score="IoU" if d.best_concept is not None else "selectivity",
        )
        (tmp / "index.html").write_text(page, encoding="utf-8")
    return out / "index.html"


def read_atlas(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``units.json`` of an atlas folder.

    Raises:
        ValueError: no atlas there, or an unreadable one.
    """
    path = Path(folder) / "units.json"
    if not path.is_file():
        raise ValueError(f"{folder} holds no dissection (no units.json); run convlens dissect")
    try:
        meta: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        meta["units"], meta["layer"], meta["source"]
    except (ValueError, KeyError) as e:
        raise ValueError(f"{path} is not a convlens dissection ({e})") from e
    return meta


def unit_caption(row: dict[str, Any]) -> str:
    """``red (IoU 0.12)``, ``Sandal (selectivity 0.89)`` or the peak activation."""
    if "iou" in row:
        return f"{row['label'] or row['concept']} (IoU {row['iou']:.3f})"
    if "selectivity" in row:
        return f"{row['top_class']} (selectivity {row['selectivity']:.2f})"
    return f"peak {row['top_scores'][0]:.3g}"


def unit_score(row: dict[str, Any]) -> float:
    """What atlas cards are sorted by: IoU, else selectivity, else the top peak."""
    if "iou" in row:
        return float(row["iou"])
    if "selectivity" in row:
        return float(row["selectivity"])
    return float(row["top_scores"][0])


def _facts(d: Dissection) -> str:
    text = (
        f"{d.units} units of {d.layer} over {d.images} images of {d.source}; thresholds at "
        f"the top {d.quantile:.2%} of activations; top images by {d.by} activation."
    )
    if d.skipped:
        text += f" {len(d.skipped)} unreadable files were skipped (listed in units.json)."
    if d.selectivity is not None:
        text += " Selectivity is computed on max(0, activation), as after the unit's ReLU" + (
            "; this layer's activations are signed (it comes before its non-linearity)."
            if d.signed
            else "; this layer's activations are non-negative already."
        )
    return text


def _write_tables(d: Dissection, rows: list[dict[str, Any]], folder: Path) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, CSV_FIELDS, extrasaction="ignore")
    writer.writeheader()
    for r in rows:
        writer.writerow({**r, "top_images": " ".join(r["top_images"])})
    (folder / "units.csv").write_text(buf.getvalue(), encoding="utf-8")
    meta = {
        "layer": d.layer,
        "source": d.source,
        "images": d.images,
        "skipped": list(d.skipped),
        "quantile": d.quantile,
        "by": d.by,
        "iou_threshold": d.iou_threshold,
        "classes": list(d.classes),
        "concepts": [
            {"number": c.number, "name": c.name, "categories": list(c.categories)}
            for c in d.concepts
        ],
        "units": rows,
    }
    (folder / "units.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
body {{ font: 14px/1.45 system-ui, sans-serif; margin: 0 auto; max-width: 1300px;
       padding: 1.2rem; color: #222; }}
h1 {{ font-size: 1.5rem; margin: 0 0 .3rem; }}
.summary {{ max-width: min(100%, 800px); height: auto; border: 1px solid #eee; }}
.controls {{ margin: 1rem 0; display: flex; gap: 1rem; align-items: center; }}
.grid {{ display: grid; grid-template-columns: repeat(auto-fill, minmax(420px, 1fr));
        gap: .8rem; }}
.card {{ border: 1px solid #ddd; border-radius: 6px; padding: .5rem .7rem; }}
.card h3 {{ margin: 0; font-size: 1rem; }}
.card .label {{ color: #c44e52; }}
.card img {{ display: block; max-width: 100%; height: auto; margin: .3rem 0; }}
.meta, .names {{ margin: .1rem 0; color: #555; font-size: .85rem; }}
.names {{ white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }}
</style></head>
<body><h1>{title}</h1>
<p>{facts} Written by <code>convlens dissect</code>; numbers in
<a href="units.csv">units.csv</a> and <a href="units.json">units.json</a>.</p>
{summary}
<div class="controls">
<label>sort by <select id="sort"><option value="score">{score}</option>
<option value="unit">unit</option></select></label>
<label>filter <input id="filter" type="search" placeholder="label or class"></label>
<span id="count"></span>
</div>
<div class="grid" id="cards">{cards}</div>
<script>
const grid = document.getElementById("cards");
const cards = Array.from(grid.children);
function update() {{
  const by = document.getElementById("sort").value;
  const text = document.getElementById("filter").value.trim().toLowerCase();
  const key = (c) => by === "unit" ? Number(c.dataset.unit) : -Number(c.dataset.score);
  const shown = cards.slice().sort((a, b) => key(a) - key(b));
  let n = 0;
  for (const c of shown) {{
    const keep = !text || c.dataset.text.includes(text);
    c.hidden = !keep;
    n += keep;
    grid.appendChild(c);
  }}
  document.getElementById("count").textContent = n + " of " + cards.length + " units";
}}
document.getElementById("sort").addEventListener("change", update);
document.getElementById("filter").addEventListener("input", update);
update();
</script>
</body></html>
"""


def _with_picture(m: re.Match[str], tag: str) -> str:
    return m.group(1) + tag


def add_to_atlas(v: Visualization, folder: str | os.PathLike[str]) -> int:
    """Put each live unit's picture at the head of its card in the atlas ``folder``
    (``units/vis-NNNN.png``, and ``index.html`` rewritten atomically). Returns how many."""
    folder = Path(folder)
    meta = read_atlas(folder)
    if meta["layer"] != v.layer:
        raise ValueError(
            f"the atlas {folder} is of layer {meta['layer']!r}, the pictures of {v.layer!r}; "
            "visualize the atlas's layer (--layer)"
        )
    page = (folder / "index.html").read_text(encoding="utf-8")
    added = 0
    for k, u in enumerate(v.units):
        if u in v.dead:
            continue
        buf = io.BytesIO()
        Image.fromarray(unit_figures.visualization_tile(v, k, side=96)).save(buf, format="PNG")
        atomic_write_bytes(folder / "units" / f"vis-{u:04d}.png", buf.getvalue())
        tag = (f'<img class="vis" src="units/vis-{u:04d}.png" '
               f'alt="what unit {u} responds to most (feature visualisation)">')  # fmt: skip
        page, n = re.subn(  # after the card's heading, replacing an earlier picture
            rf'(<div class="card" data-unit="{u}"[^>]*><h3>.*?</h3>)(?:<img class="vis"[^>]*>)?',
            partial(_with_picture, tag=tag),
            page,
            count=1,
        )
        added += n
    atomic_write_text(folder / "index.html", page)
    return added


__all__ = [
    "CSV_FIELDS",
    "STRIP_SUFFIXES",
    "add_to_atlas",
    "overlay",
    "read_atlas",
    "strip_file",
    "summary_figure",
    "unit_caption",
    "unit_score",
    "unit_strip",
    "write_atlas",
]
