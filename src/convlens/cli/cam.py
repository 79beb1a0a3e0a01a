"""``convlens cam``: class activation maps of the top classes, overlaid on the images."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from convlens.cli.common import add_image_args, add_model_args, load_model, model_inputs

METHODS = ("cam", "gradcam")  # convlens.cam.METHODS (tested equal), without torch


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "cam",
        help="class activation maps for the top classes",
        description="Overlay the class activation maps of the TOP most probable classes on "
        "each image. CAM (default) needs a head of global average pooling plus one linear "
        "layer; Grad-CAM works on any convolutional layer.",
    )
    add_model_args(p)
    add_image_args(p, "+")
    p.add_argument("--top", type=int, default=5, help="classes per image [5]")
    p.add_argument("--method", choices=METHODS, default="cam", help="[cam]")
    p.add_argument(
        "--layer",
        help="layer to explain [CAM: the one feeding global pooling; Grad-CAM: the same, "
        "else the last convolutional module]",
    )
    p.add_argument("--out", type=Path, help="PNG/SVG file [cam.png]")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from convlens.data import images
    from convlens.interpret import cam
    from convlens.render import viz

    loaded = load_model(args)
    inputs = model_inputs(args, loaded, args.images)
    result = cam.class_maps(loaded.model, inputs.x, args.top, args.method, args.layer)
    h, w = result.maps.shape[2:]
    print(f"{result.method} of layer {result.layer} ({h}x{w} maps)")
    labels = []
    for name, classes, probs in zip(inputs.names, result.class_indices, result.probs, strict=True):
        row = [f"{loaded.classes[c]} {float(probs[c]):.1%}" for c in classes.tolist()]
        labels.append(row)
        print(f"{name}: " + ", ".join(row))
    shown = [images.to_display(x, loaded.preprocessing) for x in inputs.x]
    method = "CAM" if result.method == "cam" else "Grad-CAM"
    fig = viz.draw_class_maps(
        shown,
        result.upsampled,
        labels,
        inputs.names,
        f"{loaded.name}: {method} of {result.layer} for the top {result.class_indices.shape[1]} "
        "classes (each map min-max scaled)",
    )
    out = args.out or Path("cam.png")
    viz.save_figure(fig, out)
    print(f"wrote {out}")
    return 0
