"""``convlens report``: one HTML page with every answer of the problem set."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from convlens.cli.cam import METHODS, PIXEL_METHODS
from convlens.cli.common import (
    add_image_args,
    add_int_list,
    add_model_args,
    load_model,
    model_inputs,
    parse_ints,
    region_mask,
)
from convlens.interpret.maps import registry


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "report",
        help="an HTML report of filters, units, ablation, CAM and training",
        description="Write OUT/index.html (plus its PNGs, openable offline): model summary "
        "and top-5 predictions, filters, unit feature maps, region-matched units, "
        "ablation with the fewest-units result, CAM overlays, and learning curves and "
        "hyperparameter figures when MODEL is a run directory or --sweep is given.",
    )
    add_model_args(p)
    add_image_args(p, "+")
    p.add_argument("--out", type=Path, default=Path("report"), help="output folder [report]")
    p.add_argument("--layer", help="layer for units and ablation [the one feeding GAP]")
    add_int_list(p, "--units", "units to show, e.g. 0 5 9 [0..5]")
    p.add_argument("--region", metavar="X0,Y0,X1,Y1", help="box in the first image's pixels")
    p.add_argument("--mask", type=Path, help="mask image for the first image")
    p.add_argument("--sweep", type=Path, help="a sweep directory to include")
    p.add_argument(
        "--faithfulness",
        metavar="DATA",
        help="add 'which map to trust': every CAM method scored on DATA (test, train or a "
        "folder of images)",
    )
    p.add_argument(
        "--faithfulness-images", type=int, default=200, help="images of DATA to score [200]"
    )
    p.add_argument(
        "--methods",
        nargs="*",
        default=list(registry.REPORT_METHODS),
        choices=(*METHODS, *PIXEL_METHODS),
        metavar="METHOD",
        help="map methods drawn beside CAM for the top class, and scored too with "
        f"--faithfulness [{' '.join(registry.REPORT_METHODS)}; none: leave out]",
    )
    p.add_argument(
        "--dissection", type=Path, metavar="DIR", help="a `convlens dissect` folder to include"
    )
    p.add_argument("--concepts", type=Path, metavar="DIR",
                   help="a `convlens concepts` folder: its maps on the images")  # fmt: skip
    p.add_argument(
        "--visualize-steps",
        type=int,
        default=256,
        metavar="N",
        help="steps of the feature visualisation of the most active units [256; 0: none]",
    )
    p.add_argument(
        "--figure-formats",
        nargs="*",
        default=[],
        choices=("svg", "pdf"),
        metavar="FORMAT",
        help="also write each figure as svg and/or pdf beside its PNG, for a paper [none]",
    )
    p.add_argument("--dpi", type=int, default=110, help="pixels per inch of the figures [110]")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from convlens.render import report

    if not 10 <= args.dpi <= 1200:
        raise ValueError(f"--dpi must be in 10..1200, got {args.dpi}")
    if args.visualize_steps < 0:
        raise ValueError(f"--visualize-steps must be 0 (none) or more, got {args.visualize_steps}")
    loaded = load_model(args)
    if args.concepts:  # checked before the work
        from convlens.render.concept_pages import read_concepts

        _, _, model = read_concepts(args.concepts)
        if model != loaded.name:
            raise ValueError(f"--concepts {args.concepts} are of {model}, not {loaded.name}")
    inputs = model_inputs(args, loaded, args.images)
    region = region_mask(args, inputs, loaded)
    run_dir = Path(args.model) if Path(args.model, "metrics.json").is_file() else None
    scores = []
    if args.faithfulness:
        from convlens.cli.faithfulness import DEFAULT_METHODS, data_batches
        from convlens.interpret.faithfulness import score_methods

        source, n = args.faithfulness, args.faithfulness_images
        batches = list(data_batches(source, n, 64, loaded, args.data_dir))
        scores = score_methods(
            loaded.model,
            batches,
            list(dict.fromkeys([*DEFAULT_METHODS, *args.methods])),
            layer=args.layer,
            batch_size=None,  # faithfulness.perturbed_batch
        )
    options = report.ReportOptions(
        layer=args.layer,
        units=parse_ints(args.units, "--units") if args.units else (),
        region=region,
        run_dir=run_dir,
        sweep_dir=args.sweep,
        faithfulness=scores,
        faithfulness_data=args.faithfulness or "",
        dissection=args.dissection,
        concepts=args.concepts,
        visualize_steps=args.visualize_steps,
        methods=tuple(args.methods),
        figure_formats=tuple(args.figure_formats),
        dpi=args.dpi,
    )
    path = report.build_report(loaded, inputs, args.out, options)
    print(f"open {path.resolve()}")
    return 0
