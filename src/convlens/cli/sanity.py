"""``convlens sanity``: do a method's maps depend on the model? Cascading randomisation
(Adebayo et al., 2018) with its figure, and the data randomisation test against a network
trained on shuffled labels."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from convlens.cli.cam import METHODS, PIXEL_METHODS
from convlens.cli.common import (
    add_attribution_args,
    add_model_args,
    attribution_options,
    load_model,
)
from convlens.interpret.maps import registry

ORDERS = ("top_down", "bottom_up", "independent")  # convlens.interpret.sanity.ORDERS
MEASURES = ("spearman_abs", "spearman", "ssim", "hog")  # convlens.interpret.similarity


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "sanity",
        help="randomisation sanity checks of map methods (cascading, data randomisation)",
        description="Randomise the network's layers one by one (from the top by default) and "
        "measure how much each method's maps stay the same (Adebayo et al., 2018): a "
        "method whose maps do not change explains the image, not the model. With --against, "
        "also compare the maps with those of a network trained on shuffled labels "
        "(convlens train --preset shuffled-labels). Writes OUT/sanity.md, sanity.json, "
        "cascade.png and similarity.png.",
    )
    add_model_args(p)
    p.add_argument("--data", default="test",
                   help="FashionMNIST split or a folder of images [test]")  # fmt: skip
    p.add_argument("--limit", type=int, default=100, help="images [100]")
    p.add_argument(
        "--methods",
        nargs="+",
        default=list(registry.SANITY_METHODS),
        choices=(*METHODS, *PIXEL_METHODS),
        metavar="METHOD",
        help=f"map methods to check [{' '.join(registry.SANITY_METHODS)}]",
    )
    p.add_argument("--layer", help="layer of the CAM methods [the one feeding global pooling]")
    p.add_argument("--order", choices=ORDERS, default="top_down",
                   help="randomise from the output down (cascading, as Adebayo et al.'s "
                   "figure), from the input up, or one layer at a time [top_down]")  # fmt: skip
    p.add_argument("--measures", nargs="+", choices=MEASURES, default=["spearman_abs", "ssim"],
                   help="similarities of each map to the trained network's "
                   "[spearman_abs ssim]")  # fmt: skip
    p.add_argument("--smooth", type=int, default=1, metavar="N",
                   help="sMPRT: average each map over this many noisy copies of the image "
                   "(Hedström et al., 2024) [1: plain MPRT]")  # fmt: skip
    p.add_argument("--seed", type=int, default=42, help="seed of the randomisation [42]")
    p.add_argument("--against", metavar="MODEL",
                   help="a network trained on shuffled labels (a run folder or a .pt): "
                   "the data randomisation test")  # fmt: skip
    p.add_argument("--image", type=int, default=0,
                   help="which image the cascade figure shows [0]")  # fmt: skip
    p.add_argument("--out", type=Path, default=Path("sanity"), help="[sanity]")
    add_attribution_args(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from convlens import models
    from convlens.cli.tcav import every_image
    from convlens.data.catalog import open_source
    from convlens.inference import predict_logits
    from convlens.interpret import sanity

    if args.limit < 1 or args.smooth < 1:
        raise ValueError("--limit and --smooth must be >= 1")
    if not 0 <= args.image < args.limit:
        raise ValueError(f"--image {args.image}: give an index below --limit {args.limit}")
    options = attribution_options(args, args.methods)
    loaded = load_model(args)
    source = open_source(args.data, loaded.preprocessing, args.data_dir, args.limit)
    x = every_image(source)[0]
    classes = predict_logits(loaded.model, x).argmax(1)
    against = None
    if args.against:
        from convlens.core.device import model_device

        against = models.load(args.against).model.to(model_device(loaded.model)).eval()
    settings = sanity.RandomisationSettings(order=args.order, seed=args.seed,
                                            measures=tuple(dict.fromkeys(args.measures)),
                                            samples=args.smooth, keep=args.image + 1)  # fmt: skip
    results, shuffled = [], {}
    layers = len(sanity.resettable_layers(loaded.model))
    with tqdm(total=len(args.methods) * layers, desc="sanity", unit="layer") as bar:
        for method in args.methods:
            bar.set_postfix_str(method)
            explain = sanity.map_explainer(method, args.layer, registry.taken(method, options))
            results.append(
                sanity.model_randomisation(
                    loaded.model, x, classes, explain, settings, method, lambda _: bar.update()
                )
            )
            if against is not None:
                shuffled[method] = sanity.data_randomisation(
                    loaded.model, against, x, classes, explain, settings.measures
                )
    write_results(args, loaded, x, results, shuffled)
    return 0


def write_results(
    args: argparse.Namespace, loaded: Any, x: Any, results: list[Any], shuffled: dict[str, Any]
) -> None:
    """sanity.json, sanity.md and both figures, each written whole."""
    from convlens.core.fileio import atomic_write_json, atomic_write_text, markdown_table
    from convlens.data.images import to_display
    from convlens.render import figure, sanity_figures

    names = registry.display_names()
    args.out.mkdir(parents=True, exist_ok=True)
    summary = [summarise(r, shuffled.get(r.method)) for r in results]
    measures = list(results[0].similarity)
    header = ["method", *[f"{m}, all randomised" for m in measures]]
    if shuffled:
        header += [f"{m}, shuffled labels" for m in measures]
    rows = []
    for row in summary:
        cells = [names[row["method"]], *[f"{row['last'][m]:.3f}" for m in measures]]
        cells += [f"{row['shuffled'][m]:.3f}" for m in measures] if shuffled else []
        rows.append(cells)
    table = markdown_table(header, rows)
    n = x.shape[0]
    note = (
        f"\nMedians over {n} images of {args.data}, {loaded.name}, {args.order} "
        f"randomisation (seed {args.seed}); lower means the maps depend on the model.\n"
    )
    atomic_write_text(args.out / "sanity.md", table + note)
    atomic_write_json(args.out / "sanity.json", {"model": loaded.name, "images": n,
                      "order": args.order, "seed": args.seed, "smooth": args.smooth,
                      "methods": summary})  # fmt: skip
    image = to_display(x[args.image : args.image + 1], loaded.preprocessing)[0]
    order = args.order.replace("_", " ")
    title = f"{loaded.name}: cascading randomisation ({order}), image {args.image}"
    cascade = sanity_figures.draw_cascade(image, results, names, args.image, title)
    figure.save_figure(cascade, args.out / "cascade.png")
    curves = sanity_figures.draw_similarity(results, names, f"{loaded.name} on {n} images")
    figure.save_figure(curves, args.out / "similarity.png")
    print(table, end="")
    print(f"wrote {args.out / 'sanity.md'}, sanity.json, cascade.png and similarity.png")


def summarise(result: Any, shuffled: dict[str, Any] | None) -> dict[str, Any]:
    """A method's medians: per layer, with every layer randomised, with shuffled labels."""
    import numpy as np

    def median(values: Any) -> float:
        v = values.double().numpy()
        return float(np.nanmedian(v)) if np.isfinite(v).any() else float("nan")

    return {
        "method": result.method,
        "layers": list(result.layers),
        "median": {m: [median(row) for row in s] for m, s in result.similarity.items()},
        "last": {m: median(s[-1]) for m, s in result.similarity.items()},
        "shuffled": {m: median(v) for m, v in (shuffled or {}).items()},
    }
