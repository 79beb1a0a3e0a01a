"""``convlens dissect``: what each unit of a layer responds to, over a whole data set."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from convlens.cli.common import add_model_args, add_sharding_args, load_model, state_dir_of

FLAGS = {"data": "--data", "top": "--top", "quantile": "--quantile", "by": "--by"}


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "dissect",
        help="a unit atlas over a data set: top images, class selectivity, concept labels",
        description="Stream a data set through MODEL once and describe every unit of LAYER: "
        "its activation threshold (top --quantile of all activations), its top images with "
        "the thresholded maps, the class it responds to most and how selectively (labelled "
        "data), and for a Broden data set its IoU with every concept and its label. Writes "
        "OUT/index.html (the atlas), units.csv and units.json.",
    )
    add_model_args(p)
    p.add_argument("--layer", help="convolutional layer [the one feeding global pooling]")
    p.add_argument(
        "--data",
        default="test",
        help="FashionMNIST split (test, train, val), a folder of images (sub-folders are "
        "classes), or a Broden folder (with index.csv) [test]",
    )
    p.add_argument("--limit", type=int, help="dissect only the first N images [all]")
    p.add_argument("--out", type=Path, default=Path("dissection"), help="[dissection]")
    p.add_argument("--top", type=int, default=8, help="top images per unit [8]")
    p.add_argument(
        "--quantile", type=float, default=0.005, help="top fraction above threshold [0.005]"
    )
    p.add_argument(
        "--by", choices=("peak", "mean"), default="peak", help="rank top images by [peak]"
    )
    p.add_argument(
        "--iou-threshold", type=float, default=0.04, help="IoU to label a unit (Broden) [0.04]"
    )
    p.add_argument("--batch-size", type=int, default=128, help="images per batch [128]")
    p.add_argument("--workers", type=int, default=2, help="image-loading processes [2]")
    add_sharding_args(p)
    p.add_argument(
        "--visualize",
        action="store_true",
        help="also optimise an image for every unit (convlens visualize) and put it at the "
        "head of the unit's card, beside its top images",
    )
    p.add_argument(
        "--visualize-steps", type=int, default=256, metavar="N", help="with --visualize [256]"
    )
    p.set_defaults(run=run, interrupt_hint="nothing was written")


def run(args: argparse.Namespace) -> int:
    from convlens.core.shards import Sharding
    from convlens.data.catalog import open_source
    from convlens.interpret.dissect import dissect
    from convlens.interpret.heads import default_layer
    from convlens.render.atlas import add_to_atlas, write_atlas

    if args.workers < 0 or (args.limit is not None and args.limit < 1) or args.shards < 1:
        raise ValueError("--workers must be >= 0, and --limit and --shards >= 1")
    state_dir = state_dir_of(args)
    if args.visualize and args.visualize_steps < 1:
        raise ValueError(f"--visualize-steps must be at least 1, got {args.visualize_steps}")
    loaded = load_model(args)
    source = open_source(args.data, loaded.preprocessing, args.data_dir, args.limit)
    model = loaded.model
    layer = args.layer
    if layer is None:
        probe = next(source.batches(1)).x  # default_layer runs it where the model is
        layer = default_layer(model, probe)
    d = dissect(
        model,
        source,
        layer,
        top=args.top,
        quantile=args.quantile,
        by=args.by,
        iou_threshold=args.iou_threshold,
        batch_size=args.batch_size,
        workers=args.workers,
        sharding=Sharding(args.shards, args.ray, state_dir),
    )
    # the pictures before the atlas: writing it replaces OUT, and with it OUT/shards
    v = _visualize_units(loaded, layer, d.units, args, state_dir) if args.visualize else None
    page = write_atlas(d, source, args.out, f"{loaded.name}: units of {layer}")
    print(f"dissected {d.units} units of {layer} over {d.images} images of {d.source}")
    if d.resumed:
        print(f"resumed {d.resumed} of {args.shards} shards from {state_dir}")
    if d.skipped:
        print(f"skipped {len(d.skipped)} unreadable files, e.g. {d.skipped[0]}")
    rows = d.unit_rows()
    if d.best_concept is not None:
        labelled = [r for r in rows if r["label"]]
        print(f"{len(labelled)} units labelled (IoU >= {d.iou_threshold})")
    elif d.class_means is not None:
        best = sorted(rows, key=lambda r: -r["selectivity"])[:5]
        shown = ", ".join(f"{r['unit']} {r['top_class']} {r['selectivity']:.2f}" for r in best)
        print(f"most class-selective units: {shown}")
    if v is not None:
        added = add_to_atlas(v, args.out)
        print(f"added {added} feature visualisations to the cards ({d.units - added} dead units)")
    print(f"wrote {page}")
    return 0


def _visualize_units(
    loaded: Any, layer: str, width: int, args: argparse.Namespace, state_dir: Path | None
) -> Any:
    """Every unit's feature visualisation, in the shards (and on the cluster) of the
    dissection, kept beside its shards for a rerun."""
    from convlens.core.shards import Sharding
    from convlens.interpret.objectives import channel
    from convlens.interpret.visualize import VisualizeSettings, visualize

    settings = VisualizeSettings(args.visualize_steps)
    kept = None if state_dir is None else state_dir / "visualize"
    sharding = Sharding(args.shards, args.ray, kept)
    objective = channel(layer, range(width))
    return visualize(loaded.model, objective, loaded.preprocessing, settings,
                     progress=True, sharding=sharding)  # fmt: skip
