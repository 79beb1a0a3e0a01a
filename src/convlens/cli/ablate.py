"""``convlens ablate``: remove units of a layer and compare the top-5 before and after."""

from __future__ import annotations

import argparse
from typing import Any

from convlens.cli.common import (
    add_figure_args,
    add_image_args,
    add_int_list,
    add_model_args,
    figure_path,
    load_model,
    model_inputs,
    parse_ints,
)

# convlens.ablation.MODES and ORDERS (tested equal), here so that --help needs no torch
MODES = ("activation", "weights")
ORDERS = ("optimal", "contribution", "weight", "greedy")


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "ablate",
        help="zero units and compare predictions; find the fewest units that flip the class",
        description="Remove units of LAYER (zero their activations, or their kernels with "
        "--mode weights), print the top-5 classes before and after, and save the removed "
        "units' feature maps. --min-units finds the fewest units whose removal changes the "
        "top-1 class.",
    )
    add_model_args(p)
    add_image_args(p)
    p.add_argument(
        "--layer", help="layer name [the layer feeding global average pooling, e.g. layer4]"
    )
    add_int_list(p, "--units", "unit indices to remove")
    p.add_argument(
        "--top",
        "--top-k",
        dest="top",
        type=int,
        metavar="N",
        help="remove the N units with the largest FC weight for the image's top-1 class",
    )
    p.add_argument("--mode", choices=MODES, default="activation", help="[activation]")
    p.add_argument(
        "--min-units", action="store_true", help="find the fewest units that flip the top-1"
    )
    p.add_argument(
        "--order",
        choices=ORDERS,
        help="search order for --min-units [optimal where the closed form applies, else greedy]",
    )
    p.add_argument(
        "--max-units", type=int, default=32, help="greedy search: most units to remove [32]"
    )
    p.add_argument(
        "--budget",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="greedy search: stop after this long with the best set so far [30]; 0 for no limit",
    )
    p.add_argument(
        "--shortlist",
        type=int,
        default=64,
        metavar="N",
        help="greedy search: units tried per step, those a gradient estimate ranks first "
        "[64]; 0 tries every unit",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=64,
        help="greedy search: masked images per pass of the network [64]",
    )
    add_figure_args(p, "ablation.png")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from convlens.data import images
    from convlens.interpret import ablation, units
    from convlens.interpret.heads import find_gap_head
    from convlens.render import figure, unit_figures

    if args.units is None and args.top is None and not args.min_units:
        raise ValueError("give --units K [K ...], --top N or --min-units")
    if args.units is not None and args.top is not None:
        raise ValueError("give either --units or --top, not both")
    loaded = load_model(args)
    x = model_inputs(args, loaded, [args.image]).x
    model, classes = loaded.model, loaded.classes
    layer = args.layer
    out = figure_path(args, "ablation.png")
    if args.units is not None or args.top is not None:
        if args.top is not None:
            weighted = ablation.top_weighted_units(model, x, args.top, layer)
            layer, chosen = weighted.layer, weighted.units
            print(
                f"units of {layer} with the largest FC weight for "
                f"{classes[weighted.class_index]!r}: {chosen}"
            )
        else:
            layer = layer or find_gap_head(model, x).layer
            chosen = parse_ints(" ".join(args.units), "--units")
        result = ablation.ablate(model, x, layer, chosen, args.mode)
        where = f"{args.mode} ablation of {len(chosen)} units of {result.modified}"
        print(
            unit_figures.top_k_table(
                classes,
                [("before", result.probs_before[0]), (f"after {where}", result.probs_after[0])],
            )
        )
        up = units.upsample(result.maps, (x.shape[2], x.shape[3]))[0]
        fig = unit_figures.draw_ablation(
            images.to_display(x[0], loaded.preprocessing),
            up,
            chosen,
            classes,
            result.probs_before[0],
            result.probs_after[0],
            f"{loaded.name}: {where}",
        )
        figure.save_figure(fig, out, args.dpi)
        print(f"wrote {out}")
    if args.min_units:
        search = ablation.SearchSettings(
            order=args.order,
            mode=args.mode,
            max_units=args.max_units,
            budget=args.budget or None,
            shortlist=args.shortlist or None,
            batch_size=args.batch_size,
        )
        fewest = ablation.fewest_units(model, x, layer, search, progress=True)
        print(unit_figures.describe_fewest_units(fewest, classes))
    return 0
