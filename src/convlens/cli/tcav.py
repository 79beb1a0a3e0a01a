"""``convlens tcav``: does a concept push a class's logit up? (TCAV, Kim et al. 2018)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from convlens.cli.common import add_model_args, load_model
from convlens.interpret.maps.registry import layer_list

if TYPE_CHECKING:  # the CLI starts without torch
    import torch

PATTERN = "pattern:"
CLASS = "class:"
UNIT = "unit:"


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "tcav",
        help="test whether a concept (a set of images) raises a class's logit (TCAV)",
        description="Testing with concept activation vectors: for each concept, class and "
        "layer, the fraction of the class's images whose logit rises along the concept's "
        "direction, against random sets of images, with a t-test (Bonferroni-corrected). "
        "Writes OUT/tcav.md, tcav.csv and tcav.png.",
    )
    add_model_args(p)
    p.add_argument("--layers", type=layer_list, required=True, metavar="L1,L2",
                   help="layers to test in, comma-separated")  # fmt: skip
    p.add_argument(
        "--concept",
        nargs="+",
        required=True,
        metavar="NAME=SOURCE",
        help="concept image sets: SOURCE is a folder of images, pattern:KIND (stripes-ANGLE, "
        "dots, checkers, plain, noise: drawn), class:CLASS (images of a class of --data) or "
        "unit:DIR:UNIT (a unit's top images in a `convlens dissect` folder)",
    )
    p.add_argument("--target", nargs="+", required=True, metavar="CLASS",
                   help="classes to test, by index or name")  # fmt: skip
    p.add_argument("--data", default="test", help="where class and random images come from: "
                   "a FashionMNIST split or a folder of images [test]")  # fmt: skip
    p.add_argument("--random", type=int, default=10, help="random sets, 2 or more [10]")
    p.add_argument("--per-set", type=int, default=50, help="images in each set [50]")
    p.add_argument("--method", choices=("logistic", "sgd", "fastcav"), default="logistic",
                   help="how a CAV is fitted: logistic regression (exact), SGD (captum's "
                   "default), or FastCAV's mean difference [logistic]")  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="which random images [0]")
    p.add_argument("--out", type=Path, default=Path("tcav"), help="[tcav]")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from convlens.cli.cam import class_index
    from convlens.data.catalog import open_source
    from convlens.interpret.concepts import tcav

    if args.random < 2:
        raise ValueError(f"--random {args.random}: TCAV needs 2 random sets or more")
    if args.per_set < tcav.MIN_IMAGES:
        raise ValueError(f"--per-set {args.per_set}: give {tcav.MIN_IMAGES} images or more")
    loaded = load_model(args)
    source = open_source(args.data, loaded.preprocessing, args.data_dir)
    images, labels = every_image(source)
    targets = [class_index(t, loaded.classes) for t in args.target]
    inputs = {c: of_class(images, labels, c, args.per_set, f"--target {c}") for c in targets}
    concepts = {}
    for spec in args.concept:
        name, _, where = spec.partition("=")
        if not name or not where:
            raise ValueError(
                f"--concept {spec!r}: write NAME=SOURCE, such as stripes=pattern:stripes-0"
            )
        concepts[name] = concept_images(where, args, loaded, images, labels)
    g = torch.Generator().manual_seed(args.seed)
    randoms = [
        images[torch.randperm(len(images), generator=g)[: args.per_set]] for _ in range(args.random)
    ]
    total = (
        (len(concepts) + min(args.random - 1, tcav.NULL_PARTNERS)) * args.random * len(args.layers)
    )
    with tqdm(total=total, desc="tcav", unit="CAV") as bar:

        def step() -> None:
            bar.update()

        result = tcav.tcav(
            loaded.model, inputs, concepts, randoms, args.layers, args.method, progress=step
        )
    write_results(args, loaded, result)
    return 0


def write_results(args: argparse.Namespace, loaded: Any, result: Any) -> None:
    """tcav.md, tcav.csv and tcav.png in ``args.out``, and the table on the terminal."""
    import torch

    from convlens.core.fileio import atomic_write_text
    from convlens.interpret.concepts import tcav
    from convlens.render import concept_figures, figure

    table = result.table(loaded.classes)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = ["concept,layer,class,sign_count,sd,random_mean,magnitude,p,p_corrected,significant"]
    for s in result.scores:
        rows.append(
            f"{s.concept},{s.layer},{loaded.classes[s.target]},{s.sign_count:.4f},"
            f"{torch.tensor(s.runs).std():.4f},{sum(s.null) / len(s.null):.4f},{s.magnitude:.6g},"
            f"{s.p_value:.4g},{s.p_corrected:.4g},{s.significant}"
        )
    atomic_write_text(args.out / "tcav.csv", "\n".join(rows) + "\n")
    atomic_write_text(args.out / "tcav.md", table + "\n")
    title = f"TCAV on {loaded.name}, {args.random} random sets of {args.per_set} ({args.method})"
    figure.save_figure(
        concept_figures.draw_tcav(result, loaded.classes, title), args.out / "tcav.png"
    )
    print(table)
    print(f"{result.tests} tests, Bonferroni-corrected at {tcav.LEVEL}")
    print(f"wrote {args.out / 'tcav.md'}, tcav.csv and tcav.png")


def every_image(source: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    """All of a source's model inputs and labels (None without classes)."""
    import torch

    xs, ys = [], []
    for batch in source.batches(256):
        xs.append(batch.x)
        if batch.labels is not None:
            ys.append(batch.labels)
    return torch.cat(xs), torch.cat(ys) if ys else None


def of_class(
    images: torch.Tensor, labels: torch.Tensor | None, c: int, n: int, what: str
) -> torch.Tensor:
    """The first ``n`` images of class ``c``."""
    if labels is None:
        raise ValueError(
            f"{what}: --data has no classes; give a split or a folder of class folders"
        )
    chosen = images[labels == c][:n]
    if len(chosen) == 0:
        raise ValueError(f"{what}: --data has no image of class {c}")
    return chosen


def concept_images(
    where: str, args: argparse.Namespace, loaded: Any, images: torch.Tensor, labels: Any
) -> torch.Tensor:
    """A concept's model inputs from ``where``: a pattern, a class of --data, a folder."""
    from convlens.cli.cam import class_index
    from convlens.data import patterns
    from convlens.data.catalog import open_source

    prep = loaded.preprocessing
    if where.startswith(PATTERN):
        size = prep.size or prep.crop
        drawn = patterns.draw(where[len(PATTERN) :], args.per_set, size, prep.channels, args.seed)
        return patterns.as_inputs(drawn, prep)
    if where.startswith(CLASS):
        c = class_index(where[len(CLASS) :], loaded.classes)
        return of_class(images, labels, c, args.per_set, f"--concept {where}")
    if where.startswith(UNIT):
        return unit_images(where, args, loaded)
    return every_image(open_source(where, prep, limit=args.per_set))[0]


def unit_images(where: str, args: argparse.Namespace, loaded: Any) -> torch.Tensor:
    """A dissected unit's top images (``unit:DIR:UNIT``), as model inputs."""
    from convlens.cli.common import load_inputs
    from convlens.interpret.concepts import tcav
    from convlens.render.atlas import read_atlas

    folder, _, unit = where[len(UNIT) :].rpartition(":")
    if not folder or not unit.isdigit():
        raise ValueError(f"--concept {where}: write unit:DIR:UNIT, such as unit:dissection:12")
    atlas = read_atlas(folder)
    rows = atlas["units"]
    if int(unit) >= len(rows):
        raise ValueError(f"--concept {where}: the dissection has units 0..{len(rows) - 1}")
    names = rows[int(unit)]["top_images"][: args.per_set]
    if len(names) < tcav.MIN_IMAGES:
        raise ValueError(
            f"--concept {where}: the unit has {len(names)} top images; TCAV needs "
            f"{tcav.MIN_IMAGES} or more (run convlens dissect with --top {tcav.MIN_IMAGES})"
        )
    source = Path(str(atlas["source"]))
    paths = [n if n.startswith("test:") or Path(n).exists() else str(source / n) for n in names]
    return load_inputs(paths, loaded.preprocessing, args.data_dir).x


__all__ = ["add_parser", "run"]
