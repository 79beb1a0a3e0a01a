"""The figures docs/dissection.md quotes, from an atlas that `convlens dissect` wrote.

For a dissection of the layer feeding global pooling: units per top class, the median
class selectivity and how many units reach 0.5 and 0.7, the most and least selective
units, and for how many units the top class is also the class that the unit's weight
in the final linear layer raises most.

    uv run convlens dissect fashion-cnn --layer features --data test --out dissection
    uv run python benchmarks/dissect_summary.py dissection --model fashion-cnn
"""

from __future__ import annotations

import argparse
import statistics
from collections import Counter
from pathlib import Path
from typing import Any

from convlens import models
from convlens.render.atlas import read_atlas


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("atlas", type=Path)
    parser.add_argument("--model", default="fashion-cnn")
    args = parser.parse_args()
    units = read_atlas(args.atlas)["units"]
    loaded = models.load(args.model)
    weight = loaded.model.fc.weight.detach()  # [classes, units]
    sel = [u["selectivity"] for u in units]
    print(f"units per top class: {dict(Counter(u['top_class'] for u in units).most_common())}")
    half, high = sum(s >= 0.5 for s in sel), sum(s >= 0.7 for s in sel)
    print(f"selectivity: median {statistics.median(sel):.2f}, >= 0.5: {half}, >= 0.7: {high}")
    ranked = sorted(units, key=lambda u: -u["selectivity"])
    for label, rows in (("most", ranked[:6]), ("least", ranked[-3:])):
        shown = ", ".join(f"{u['unit']} {u['top_class']} {u['selectivity']:.2f}" for u in rows)
        print(f"{label} selective: {shown}")

    def votes_for_top_class(u: dict[str, Any]) -> bool:
        return loaded.classes[int(weight[:, u["unit"]].argmax())] == u["top_class"]

    strong = [u for u in units if u["selectivity"] >= 0.7]
    agree, agree_strong = (
        sum(map(votes_for_top_class, units)),
        sum(map(votes_for_top_class, strong)),
    )
    print(
        f"top class = the class its FC weight favours: {agree} of {len(units)}; "
        f"{agree_strong} of the {len(strong)} with selectivity >= 0.7"
    )


if __name__ == "__main__":
    main()
