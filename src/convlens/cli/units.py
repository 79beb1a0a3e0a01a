"""``convlens units``: feature maps of chosen, most active, or region-matching units."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from convlens.cli.common import (
    add_figure_args,
    add_image_args,
    add_model_args,
    figure_path,
    load_model,
    model_inputs,
    parse_ints,
    region_mask,
)


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "units",
        help="feature maps of units over an image",
        description="Overlay the upsampled feature maps of units of LAYER on IMAGE: chosen "
        "units (--unit), the most active ones (--top), or the ones whose thresholded map "
        "best matches a region (--region or --mask, ranked by IoU).",
    )
    add_model_args(p)
    add_image_args(p)
    p.add_argument("--layer", required=True, help="layer name (see `convlens layers`)")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument(
        "--units",
        "--unit",
        dest="units",
        nargs="+",
        metavar="K",
        help="unit indices (space- or comma-separated)",
    )
    what.add_argument("--top", type=int, metavar="N", help="the N most active units")
    what.add_argument(
        "--region",
        metavar="X0,Y0,X1,Y1",
        help="box in the original image's pixels; rank units by IoU",
    )
    what.add_argument("--mask", type=Path, help="mask image (nonzero inside), image-sized")
    p.add_argument("--show", type=int, default=8, help="units drawn for --region/--mask [8]")
    p.add_argument(
        "--quantile",
        type=float,
        default=0.8,
        help="per-unit threshold quantile for --region/--mask [0.8]",
    )
    p.add_argument(
        "--by", choices=("mean", "max"), default="mean", help="activity measure for --top [mean]"
    )
    add_figure_args(p, "units.png")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from convlens.data import images
    from convlens.interpret import units
    from convlens.render import figure, unit_figures

    loaded = load_model(args)
    inputs = model_inputs(args, loaded, [args.image])
    x = inputs.x
    shown = images.to_display(x[0], loaded.preprocessing)
    out = figure_path(args, "units.png")
    region = region_mask(args, inputs, loaded)
    if region is not None:
        match = units.match_region(loaded.model, x, args.layer, region, args.quantile)
        k = min(args.show, len(match.units))
        print(
            f"units of {args.layer} ranked by IoU with the region "
            f"({int(region.sum())} of {region.numel()} input pixels; threshold quantile "
            f"{args.quantile}):"
        )
        print("  rank  unit   IoU")
        for rank in range(min(k * 2, len(match.units))):
            print(f"  {rank + 1:>4}  {int(match.units[rank]):>4}  {float(match.iou[rank]):.3f}")
        fig = unit_figures.draw_region_match(
            shown,
            region,
            match.units[:k].tolist(),
            match.iou[:k].tolist(),
            match.masks[:k],
            f"{loaded.name} {args.layer}: units best matching the region",
        )
    else:
        if args.top is not None:
            best = units.top_units(loaded.model, x, args.layer, args.top, by=args.by)
            chosen, scores = best.units[0].tolist(), best.scores
            print(f"most active units of {args.layer} ({args.by} activation):")
            for u, s in zip(chosen, scores[0].tolist(), strict=True):
                print(f"  unit {u:>4}  {s:.3f}")
        else:
            chosen = parse_ints(" ".join(args.units), "--units")
        um = units.unit_maps(loaded.model, x, args.layer, chosen)
        fig = unit_figures.draw_unit_maps(
            shown,
            um.upsampled[0],
            um.units,
            um.peaks[0].tolist(),
            f"{loaded.name} {args.layer}: feature maps upsampled to the "
            f"{x.shape[3]}x{x.shape[2]} input",
        )
    figure.save_figure(fig, out, args.dpi)
    print(f"wrote {out}")
    return 0
