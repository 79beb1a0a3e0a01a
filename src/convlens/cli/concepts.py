"""``convlens concepts``: discover the concepts a layer uses (NMF: Deep Feature
Factorization, CRAFT), with their exemplars, pictures, importance per class and maps."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from convlens.cli.common import add_model_args, load_model


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "concepts",
        help="discover the concepts (directions across units) a layer uses, by NMF",
        description="Factorise LAYER's non-negative activations over a data set into K "
        "concepts (scikit-learn's NMF, at every position or, with --patches, CRAFT's image "
        "patches); for each concept its exemplars, its feature visualisation, its importance "
        "per class (Sobol total indices and gradient x concept), C-Deletion and C-Insertion, "
        "and its maps on images. Writes OUT/concepts.md, concepts.json, cards-*.png, "
        "curves.png and maps.png.",
    )
    add_model_args(p)
    p.add_argument("--layer", help="convolutional layer [the one feeding global pooling]")
    p.add_argument("--data", default="test", help="FashionMNIST split or a folder of images "
                   "(sub-folders are classes; else the predictions are) [test]")  # fmt: skip
    p.add_argument("--limit", type=int, help="only the first N images [all]")
    p.add_argument("--k", type=int, default=10, help="concepts per factorisation [10]")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--per-class", action="store_true",
                       help="one factorisation per class, of its images (CRAFT's way)")  # fmt: skip
    which.add_argument("--classes", nargs="+", metavar="CLASS",
                       help="one factorisation for each of these (index or name)")  # fmt: skip
    p.add_argument("--patches", type=int, metavar="SIZE",
                   help="factorise CRAFT's patches of SIZE px, not every position")  # fmt: skip
    p.add_argument("--shift", action="store_true",
                   help="shift a layer with negative activations by its minimum")  # fmt: skip
    p.add_argument("--top", type=int, default=8, help="exemplars per concept [8]")
    p.add_argument("--designs", type=int, default=32, help="Sobol design size (CRAFT's) [32]")
    p.add_argument("--importance-images", type=int, default=500, metavar="N",
                   help="images per class that importance is averaged over [500]")  # fmt: skip
    p.add_argument("--show", type=int, default=4, metavar="N",
                   help="images whose concept maps maps.png shows [4]")  # fmt: skip
    p.add_argument("--visualize-steps", type=int, default=128, metavar="N",
                   help="steps of each concept's feature visualisation; 0: none [128]")  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="NMF's and the controls' seed [0]")
    p.add_argument("--atlas", type=Path, metavar="DIR",
                   help="a `convlens dissect` folder (same layer) to add cards to")  # fmt: skip
    p.add_argument("--out", type=Path, default=Path("concepts"),
                   help="folder, replaced whole [concepts]")  # fmt: skip
    p.set_defaults(run=run, interrupt_hint="nothing was written")


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from convlens.cli.tcav import every_image
    from convlens.data.catalog import open_source
    from convlens.interpret.concepts import discover
    from convlens.interpret.heads import default_layer
    from convlens.render.concept_figures import concept_order

    settings = check(args)
    loaded = load_model(args)
    source = open_source(args.data, loaded.preprocessing, args.data_dir, args.limit)
    x, labels = every_image(source)
    layer = args.layer or default_layer(loaded.model, x[:1])
    if args.atlas:  # checked before the work
        from convlens.render.atlas import read_atlas

        atlas_layer = read_atlas(args.atlas)["layer"]
        if atlas_layer != layer:
            raise ValueError(
                f"--atlas {args.atlas} is of layer {atlas_layer!r}, not {layer!r}: give --layer"
            )
    if labels is None:  # no classes in the data: the model's
        from convlens.inference import predict_logits

        labels = predict_logits(loaded.model, x).argmax(1)
    classes = chosen_classes(args, loaded.classes)
    bars: list[Any] = []  # opened once the checks, which need the activations, have passed

    def step(what: str, done: int, total: int) -> None:
        if what == "concepts":
            if not bars:
                bars.append(tqdm(total=total, desc="concepts", unit="group"))
            bars[0].update(done - bars[0].n)

    try:
        found = discover.concepts(loaded.model, x, layer, labels, classes, settings, progress=step)
    finally:
        for bar in bars:
            bar.close()
    pictures = concept_pictures(args, loaded, found)
    write_results(args, loaded, found, x, pictures)
    for group in found.groups:
        print(f"{group.group}: error {group.error:.3f}, top concepts {concept_order(group)[:3]}")
    print(f"wrote {args.out / 'concepts.md'}, concepts.json and the figures")
    return 0


def check(args: argparse.Namespace) -> Any:
    """The settings from the flags, each checked (one line naming the flag)."""
    from convlens.interpret.concepts.discover import ConceptSettings

    if args.k < 1:
        raise ValueError(f"--k {args.k}: give 1 concept or more")
    if args.top < 1 or args.designs < 2 or args.show < 0 or args.visualize_steps < 0:
        raise ValueError("--top must be >= 1, --designs >= 2, --show and --visualize-steps >= 0")
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit {args.limit}: give 1 image or more")
    if args.importance_images < 1:
        raise ValueError(f"--importance-images {args.importance_images}: give 1 or more")
    return ConceptSettings(
        k=args.k, patches=args.patches, shift=args.shift, top=args.top, designs=args.designs,
        importance_images=args.importance_images, seed=args.seed,
    )  # fmt: skip


def chosen_classes(args: argparse.Namespace, names: tuple[str, ...]) -> list[int] | None:
    """``--per-class``: every class; ``--classes``: those; neither: one factorisation."""
    from convlens.cli.cam import class_index

    if args.per_class:
        return list(range(len(names)))
    if args.classes:
        return [class_index(c, names) for c in args.classes]
    return None


def concept_pictures(args: argparse.Namespace, loaded: Any, found: Any) -> list[Any]:
    """Each group's feature visualisations (``[k, c, h, w]``), or ``None`` each."""
    if args.visualize_steps == 0:
        return [None] * len(found.groups)
    import torch

    from convlens.interpret.objectives import direction
    from convlens.interpret.visualize import VisualizeSettings, visualize

    settings = VisualizeSettings(steps=args.visualize_steps, seed=args.seed)
    banks = torch.cat([group.bank for group in found.groups])  # every group in one pass
    v = visualize(loaded.model, direction(found.layer, banks), loaded.preprocessing, settings,
                  progress=True)  # fmt: skip
    return list(v.images[:, 0].split([len(group.bank) for group in found.groups]))


def write_results(
    args: argparse.Namespace, loaded: Any, found: Any, x: Any, pictures: list[Any]
) -> None:
    """The concepts folder (``render.concept_pages.write_concepts``), and the cards in
    the ``--atlas``."""
    from convlens.data.images import to_display
    from convlens.render import concept_pages

    exemplars = []
    for group in found.groups:
        shown = to_display(x[group.exemplars.flatten()], loaded.preprocessing)
        exemplars.append(shown.reshape(*group.exemplars.shape, *shown.shape[1:]))
    title = f"concepts of {loaded.name} {found.layer}"
    maps = maps_figure(args, loaded, found, x, title) if args.show else None
    concept_pages.write_concepts(found, exemplars, pictures, loaded.classes, args.out,
                                 loaded.name, maps)  # fmt: skip
    if args.atlas:
        cards = concept_pages.add_concepts_to_atlas(found, args.out, loaded.classes, args.atlas)
        print(f"added {cards} concept cards to {args.atlas / 'index.html'}")


def maps_figure(args: argparse.Namespace, loaded: Any, found: Any, x: Any, title: str) -> Any:
    """The first ``--show`` images with the maps of their predicted class's three most
    important concepts (from that class's group, or the one group)."""
    import torch
    import torch.nn.functional as F

    from convlens.data.images import to_display
    from convlens.inference import predict_logits
    from convlens.interpret.concepts.discover import concept_maps
    from convlens.render import concept_figures

    images = x[: args.show]
    predicted = predict_logits(loaded.model, images).argmax(1).tolist()
    by_class = {g.group: g for g in found.groups}
    rows, captions = [], []
    for i, c in enumerate(predicted):
        group = by_class.get(c, found.groups[0])
        row = group.classes.index(c) if c in group.classes else 0
        top = group.sobol[row].nan_to_num().argsort(descending=True)[:3].tolist()
        maps = concept_maps(loaded.model, images[i : i + 1], found.layer, group.bank, found.shift)
        up = F.interpolate(maps[:, top], size=images.shape[-2:], mode="bilinear")
        rows.append(up[0])
        owner = "" if group.group is None else f"{loaded.classes[group.group]} "
        captions.append([f"{owner}concept {k}" for k in top])
    shown = to_display(images, loaded.preprocessing)
    return concept_figures.draw_concept_maps(shown, torch.stack(rows), captions,
                                             f"{title}: where each concept is")  # fmt: skip


__all__ = ["add_parser", "run"]
