"""``convlens filters``: a picture of a conv layer's kernels."""

from __future__ import annotations

import argparse
from typing import Any

from convlens.cli.common import (
    add_figure_args,
    add_int_list,
    add_model_args,
    figure_path,
    load_model,
    parse_ints,
)


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "filters",
        help="draw the kernels of a conv layer",
        description="Draw a conv layer's kernels: a first layer on RGB input "
        "as colour tiles, any other layer as a grid of output filters x "
        "input channels in grayscale.",
    )
    add_model_args(p)
    p.add_argument("--layer", help="conv layer name [the first conv layer]")
    add_int_list(p, "--filters", "output filters to show, e.g. 0 1 2 [first 64]")
    add_int_list(p, "--in-channels", "input channels to show (grayscale grids) [first 8]")
    p.add_argument("--max-filters", type=int, default=64)
    p.add_argument(
        "--per",
        choices=("filter", "layer"),
        default="filter",
        help="normalise each filter to [0,1], or the whole layer [filter]",
    )
    add_figure_args(p, "filters-LAYER.png")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from convlens.core.hooks import conv_layer_names
    from convlens.interpret import filters
    from convlens.render import figure, unit_figures

    loaded = load_model(args)
    layer = args.layer or conv_layer_names(loaded.model)[0]
    tiles = filters.filter_tiles(
        loaded.model,
        layer,
        filters=parse_ints(args.filters, "--filters") if args.filters else None,
        in_channels=parse_ints(args.in_channels, "--in-channels") if args.in_channels else None,
        max_filters=args.max_filters,
        per=args.per,
    )
    out = figure_path(args, f"filters-{layer}.png")
    fig = unit_figures.draw_filters(
        tiles, title=f"{loaded.name} {layer}: weight " + "x".join(map(str, tiles.weight_shape))
    )
    figure.save_figure(fig, out, args.dpi)
    print(
        f"wrote {out} ({len(tiles.filters)} filters, "
        f"{'colour' if tiles.rgb else f'{len(tiles.in_channels)} input channels each'})"
    )
    return 0
