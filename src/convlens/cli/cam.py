"""``convlens cam``: class activation maps of the top classes, overlaid on the images."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from convlens.cli.common import (
    add_attribution_args,
    add_figure_args,
    add_image_args,
    add_model_args,
    add_sign_args,
    attribution_options,
    figure_path,
    load_model,
    model_inputs,
)
from convlens.interpret.maps import registry

# the method registry is plain data: --help needs no torch
METHODS = tuple(registry.names(registry.CAM))
PIXEL_METHODS = tuple(registry.names(registry.PIXEL))


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "cam",
        help="class activation maps or pixel attributions for the top classes",
        description="Overlay the class activation maps of the TOP most probable classes on "
        "each image. CAM (default) needs a head of global average pooling plus one linear "
        "layer; Grad-CAM works on any convolutional layer. The pixel attributions "
        f"({', '.join(PIXEL_METHODS)}) are computed at the input; their map is the "
        "attributions summed over colour channels.",
    )
    add_model_args(p)
    add_image_args(p, "+")
    p.add_argument("--top", type=int, default=5, help="classes per image [5]")
    p.add_argument(
        "--method",
        choices=(*METHODS, *PIXEL_METHODS, "all"),
        default=registry.DEFAULT_METHOD,
        help=f"[{registry.DEFAULT_METHOD}]; all: one figure, rows images, columns CAM "
        "methods, for the top class",
    )
    p.add_argument(
        "--class",
        dest="target",
        metavar="CLASS",
        help="map this class (index or name) instead of the top ones",
    )
    p.add_argument(
        "--layer",
        help="layer to explain [CAM: the one feeding global pooling; Grad-CAM: the same, "
        "else the last convolutional module]",
    )
    add_figure_args(p, "cam.png")
    add_attribution_args(p)
    add_sign_args(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from convlens.data import images
    from convlens.render import figure, heatmaps, map_figures

    out = figure_path(args, "cam.png")
    if not 0 <= args.clip < 100:  # before the model is loaded and the maps computed
        raise ValueError(f"--clip must be a percentage in [0, 100), got {args.clip}")
    if args.sign is not None and args.method not in PIXEL_METHODS:
        raise ValueError(
            f"--sign draws pixel attributions ({', '.join(PIXEL_METHODS)}); {args.method}'s "
            "maps are non-negative and drawn min-max scaled"
        )
    options = attribution_options(args, [args.method])
    loaded = load_model(args)
    inputs = model_inputs(args, loaded, args.images)
    classes = None
    if args.target is not None:
        index = class_index(args.target, loaded.classes)
        classes = torch.full((inputs.x.shape[0], 1), index, dtype=torch.long)
    shown = [images.to_display(x, loaded.preprocessing) for x in inputs.x]
    if args.method == "all":
        return _every_method(args, loaded, inputs, shown, classes, out)
    result = registry.class_maps(
        loaded.model, inputs.x, args.top, args.method, args.layer, classes=classes, options=options
    )
    h, w = result.maps.shape[2:]
    print(f"{result.method} of layer {result.layer} ({h}x{w} maps)")
    labels = []
    for name, indices, probs in zip(inputs.names, result.class_indices, result.probs, strict=True):
        row = [f"{loaded.classes[c]} {float(probs[c]):.1%}" for c in indices.tolist()]
        labels.append(row)
        print(f"{name}: " + ", ".join(row))
    method = registry.display_names()[result.method]
    maps, style = heatmaps.drawable(result, args.sign, args.clip)
    fig = map_figures.draw_class_maps(
        shown,
        maps,
        labels,
        inputs.names,
        f"{loaded.name}: {method} of {result.layer} for "
        + (
            f"class {loaded.classes[int(classes[0, 0])]}"
            if classes is not None
            else f"the top {result.class_indices.shape[1]} classes"
        )
        + f" ({style.describe()})",
        style,
    )
    figure.save_figure(fig, out, args.dpi)
    print(f"wrote {out}")
    return 0


def class_index(text: str, names: Sequence[str]) -> int:
    """A class given as an index or a name (case-insensitive)."""
    if text.isdigit():
        if int(text) >= len(names):
            raise ValueError(f"--class {text}: the model has classes 0..{len(names) - 1}")
        return int(text)
    lowered = [n.lower() for n in names]
    if text.lower() in lowered:
        return lowered.index(text.lower())
    close = [n for n in names if text.lower() in n.lower()][:5]
    raise ValueError(
        f"--class {text!r} is not a class of this model"
        + (f"; did you mean {', '.join(close)}?" if close else "; give its index")
    )


def _every_method(
    args: argparse.Namespace,
    loaded: Any,
    inputs: Any,
    shown: list[Any],
    classes: Any,
    out: Path,
) -> int:
    """``--method all``: rows images, columns methods, for one class per image."""
    import torch

    from convlens.render import figure, map_figures

    results = registry.every_method(loaded.model, inputs.x, args.layer, classes)
    first = next(iter(results.values()))
    names = [registry.display_names()[m] for m in results]
    maps = torch.stack([r.upsampled[:, 0] for r in results.values()], 1)  # [N, M, H, W]
    targets = first.class_indices[:, 0].tolist()
    for i, (name, c) in enumerate(zip(inputs.names, targets, strict=True)):
        print(f"{name}: {loaded.classes[c]} {float(first.probs[i, c]):.1%}")
    print("methods: " + ", ".join(names) + f" (layer {first.layer})")
    fig = map_figures.draw_class_maps(
        shown,
        maps,
        [names] * len(targets),
        [f"{n}: {loaded.classes[c]}" for n, c in zip(inputs.names, targets, strict=True)],
        f"{loaded.name}: every method for "
        + ("the chosen class" if classes is not None else "the top class")
        + f" (layer {first.layer}; each map min-max scaled)",
    )
    figure.save_figure(fig, out, args.dpi)
    print(f"wrote {out}")
    return 0
