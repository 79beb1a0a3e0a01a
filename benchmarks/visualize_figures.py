"""The figures of docs/visualize.md: what fashion-cnn's units want to see, beside what
the data set shows them.

Reads an atlas made by ``convlens dissect fashion-cnn --layer features --data test --out
ATLAS`` and, for its ``--units`` most class-selective units, optimises (defaults, 256
steps) one image to raise the unit, one to lower it, and four with diversity, then draws
each unit as a row: raised, lowered, the four diverse images, and the unit's top
exemplars from the atlas. Also the grid and sanity figure of all 128 units. Prints a
Markdown table of each shown unit's activation against the test set's extremes.

    uv run convlens dissect fashion-cnn --layer features --data test --out dissection
    uv run python benchmarks/visualize_figures.py dissection --out docs/visualize
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from PIL import Image

from convlens import models
from convlens.data.sources import FashionSplit
from convlens.interpret.objectives import channel, diversity
from convlens.interpret.visualize import VisualizeSettings, visualize
from convlens.render import atlas, figure, unit_figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("atlas", type=Path)
    parser.add_argument("--units", type=int, default=6)
    parser.add_argument("--out", type=Path, default=Path("docs/visualize"))
    args = parser.parse_args()
    loaded = models.load("fashion-cnn")
    model, p = loaded.model, loaded.preprocessing
    meta = atlas.read_atlas(args.atlas)
    best = sorted(meta["units"], key=lambda r: -atlas.unit_score(r))[: args.units]
    chosen = [r["unit"] for r in best]
    data = FashionSplit("test")
    unit = channel("features", chosen)
    up = visualize(model, unit, p, data=data)
    down = visualize(model, -unit, p)
    many = visualize(model, unit - 0.05 * diversity("features"), p, VisualizeSettings(images=4))
    args.out.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(12, 1.7 * len(chosen)))
    grid = fig.add_gridspec(len(chosen), 3, width_ratios=[2, 4, 8.5], wspace=0.05)
    for k, row in enumerate(best):
        pair = np.concatenate(
            [unit_figures.visualization_tile(up, k), unit_figures.visualization_tile(down, k)], 1
        )
        strip = atlas.strip_file(args.atlas, row["unit"])
        assert strip is not None
        cells = (
            (pair, f"unit {row['unit']}: raised | lowered"),
            (unit_figures.visualization_tile(many, k), "four diverse images"),
            (np.asarray(Image.open(strip).convert("RGB")), atlas.unit_caption(row)),
        )
        for j, (img, title) in enumerate(cells):
            ax = fig.add_subplot(grid[k, j])
            ax.imshow(img)
            ax.set_title(title, fontsize=9)
            ax.set_axis_off()
    figure.save_figure(fig, args.out / "units.png", dpi=110)
    whole = visualize(model, channel("features", range(128)), p, data=data)
    figure.save_figure(
        unit_figures.draw_visualization_grid(whole, "fashion-cnn features"),
        args.out / "grid.png",
        dpi=90,
    )
    figure.save_figure(
        unit_figures.draw_visualization_sanity(whole, "fashion-cnn features"),
        args.out / "sanity.png",
        dpi=90,
    )
    assert up.dataset_max is not None and up.dataset_min is not None
    print("| unit | atlas | raised | test-set max | lowered | test-set min | diverse (mean) |")
    print("|---|---|---|---|---|---|---|")
    for k, row in enumerate(best):
        print(
            f"| {row['unit']} | {atlas.unit_caption(row)} | {float(up.activation[k].mean()):.2f} "
            f"| {float(up.dataset_max[k]):.2f} | {float(down.activation[k].mean()):.2f} "
            f"| {float(up.dataset_min[k]):.2f} | {float(many.activation[k].mean()):.2f} |"
        )
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
