"""``convlens faithfulness``: which saliency map to believe, measured over a data set."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from convlens.cli.cam import METHODS, PIXEL_METHODS
from convlens.cli.common import (
    add_attribution_args,
    add_model_args,
    add_sharding_args,
    attribution_options,
    load_model,
    state_dir_of,
)
from convlens.interpret.maps import registry

REFERENCES = ("random", "edges")  # convlens.interpret.faithfulness.REFERENCE_MAPS
# Every CAM method but Score-CAM (one forward pass per channel), then the reference maps;
# the pixel attributions on request (--methods, or --pixel for all of them).
DEFAULT_METHODS = (*registry.names(registry.CAM, default_only=True), *REFERENCES)


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "faithfulness",
        help="deletion/insertion AUC and Average Drop of each CAM method over a data set",
        description="Score how faithful each method's maps are to the model, for the top-1 "
        "class of every image: deletion and insertion AUC (RISE) and Average Drop / "
        "Increase in Confidence (Grad-CAM++), next to a random map and an edge detector. "
        "Writes OUT/faithfulness.csv, .md and curves.png.",
    )
    add_model_args(p)
    p.add_argument(
        "--data",
        default="test",
        help="FashionMNIST split (test, train, val) or a folder of images, searched "
        "recursively [test]",
    )
    p.add_argument("--limit", type=int, default=1000, help="images to score [1000]")
    p.add_argument(
        "--methods",
        nargs="+",
        default=[m for m in DEFAULT_METHODS if m not in REFERENCES],
        choices=(*METHODS, *PIXEL_METHODS, *REFERENCES),
        metavar="METHOD",
        help=f"any of {', '.join((*METHODS, *PIXEL_METHODS, *REFERENCES))} "
        f"[the CAM methods of one pass per image: "
        f"{', '.join(m for m in DEFAULT_METHODS if m not in REFERENCES)}]",
    )
    p.add_argument("--pixel", action="store_true", help="add every pixel attribution to --methods")
    _add_test_args(p)
    p.add_argument("--no-references", action="store_true", help="leave out random and edges")
    p.add_argument("--layer", help="layer to explain [the one feeding global pooling]")
    p.add_argument("--steps", type=int, default=20, help="perturbation steps [20]")
    p.add_argument(
        "--baseline",
        choices=("zeros", "blur", "mean"),
        default="zeros",
        help="what removed pixels become, and the baseline of integratedgradients and "
        "occlusion [zeros]",
    )
    p.add_argument("--batch-size", type=int, default=64, help="images per batch [64]")
    p.add_argument("--out", type=Path, default=Path("faithfulness"), help="[faithfulness]")
    add_attribution_args(p, own=("steps", "baseline", "batch-size"))
    add_sharding_args(p)
    p.set_defaults(run=run)


def _add_test_args(p: argparse.ArgumentParser) -> None:
    """The columns beyond deletion, insertion and Average Drop, each on request."""
    p.add_argument(
        "--captum-metrics",
        action="store_true",
        help="also captum's infidelity and max-sensitivity of every map (slower: 10 "
        "perturbed copies of each image, and 10 more maps per image)",
    )
    p.add_argument(
        "--road",
        action="store_true",
        help="also ROAD: the class probability with 10-90%% of the pixels removed by the map "
        "and filled by noisy linear imputation, most relevant first (MoRF, lower is better) "
        "and least relevant first (LeRF, higher is better)",
    )
    p.add_argument(
        "--sanity",
        action="store_true",
        help="also the sanity checks: Spearman similarity to the maps of the network with "
        "every layer randomised (MPRT, lower passes), the rise of their entropy (eMPRT, "
        "higher passes), SSIM to a random other class's maps (random logit, lower passes)",
    )


def run(args: argparse.Namespace) -> int:
    from convlens.core.fileio import atomic_write_text, markdown_table
    from convlens.core.shards import Sharding
    from convlens.interpret.faithfulness import score_methods
    from convlens.render import figure, map_figures

    if args.limit < 1 or args.batch_size < 1 or args.shards < 1:
        raise ValueError("--limit, --batch-size and --shards must be >= 1")
    state_dir = state_dir_of(args)
    loaded = load_model(args)
    methods = list(dict.fromkeys([*args.methods, *(PIXEL_METHODS if args.pixel else ())]))
    options = attribution_options(args, methods, own=("baseline", "batch-size"))
    if not args.no_references:
        methods += [r for r in REFERENCES if r not in methods]
    batches = list(data_batches(args.data, args.limit, args.batch_size, loaded, args.data_dir))
    scores = score_methods(
        loaded.model,
        batches,
        methods,
        layer=args.layer,
        steps=args.steps,
        baseline=args.baseline,
        batch_size=None,  # faithfulness.perturbed_batch
        options=options,
        captum_metrics=args.captum_metrics,
        road=args.road,
        sanity=args.sanity,
        sharding=Sharding(args.shards, args.ray, state_dir),
    )
    header, rows = map_figures.faithfulness_table(scores)
    args.out.mkdir(parents=True, exist_ok=True)
    csv = "\n".join(",".join(r) for r in [header, *rows]) + "\n"
    md = markdown_table(header, rows)
    atomic_write_text(args.out / "faithfulness.csv", csv)
    atomic_write_text(args.out / "faithfulness.md", md)
    n = scores[0].images
    title = f"{loaded.name} on {n} images of {args.data} (baseline {args.baseline})"
    figure.save_figure(map_figures.draw_faithfulness(scores, title), args.out / "curves.png")
    print(md, end="")
    print(f"wrote {args.out / 'faithfulness.csv'}, faithfulness.md and curves.png")
    return 0


def data_batches(
    source: str, limit: int, batch_size: int, loaded: Any, data_dir: str | None
) -> Iterator[Any]:
    """Model inputs ``[B, C, H, W]`` of ``source`` (a FashionMNIST split or a folder of
    images searched recursively, see :func:`convlens.data.catalog.open_source`),
    ``limit`` images in all."""
    from convlens.data.catalog import open_source

    for batch in open_source(source, loaded.preprocessing, data_dir, limit).batches(batch_size):
        yield batch.x
