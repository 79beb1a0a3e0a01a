"""``convlens visualize``: what a unit, a class or a direction wants to see."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from convlens.cli.common import (
    add_int_list,
    add_model_args,
    add_sharding_args,
    load_model,
    parse_ints,
    state_dir_of,
)

# the library's names of the settings that this command's flags name otherwise
FLAGS = {"images": "--diversity", "param": "--image-param"}


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "visualize",
        help="feature visualisation: images optimised for units, classes or a direction",
        description="Optimise images for an objective of a layer (Olah et al. 2017): a unit's "
        "mean activation (channel), its centre position (neuron), a class logit, a direction "
        "over the layer's channels, or the whole layer (DeepDream); many units in one batch. "
        "Writes one PNG per unit, a grid, a sanity figure (each unit's activation next to "
        "the data set's maximum, and the optimisation curves) and visualize.json; with "
        "--atlas, puts each unit's picture at the head of its card in that atlas.",
    )
    add_model_args(p)
    p.add_argument("--layer", help="layer to read [the default layer; the logits for class]")
    which = p.add_mutually_exclusive_group()
    add_int_list(which, "--units", "units (or classes), e.g. 0 5 17")
    which.add_argument(
        "--top",
        type=int,
        metavar="N",
        help="the N units with the highest mean activation on some image of --data",
    )
    which.add_argument("--all", action="store_true", help="every unit of the layer")
    p.add_argument(
        "--objective",
        # objectives.KINDS, written out: the parser is built without importing torch
        # (tests/cli/test_vocabulary.py checks that the two agree)
        choices=("channel", "neuron", "class", "direction", "layer"),
        default="channel",
        help="[channel]",
    )
    p.add_argument("--direction", type=Path, help="a .pt or .npy vector over the layer's channels")
    p.add_argument("--negative", action="store_true", help="minimise the objective instead")
    p.add_argument("--diversity", type=int, default=1, metavar="N", help="images per unit [1]")
    p.add_argument("--diversity-weight", type=float, default=0.05, metavar="W", help="[0.05]")
    # `--param` names a hyperparameter in `convlens sweep`; here the image's parameterisation
    p.add_argument(
        "--image-param",
        choices=("fourier", "pixel"),
        default="fourier",
        help="how the image is parameterised [fourier]",
    )
    p.add_argument("--steps", type=int, default=256, help="[256]")
    p.add_argument("--lr", type=float, default=0.1, help="Adam's learning rate [0.1]")
    p.add_argument("--size", type=int, help="image side [the model's input size]")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--batch-size",
        type=int,
        metavar="N",
        help="units optimised at once [128 for inputs up to 64 px, else 16]",
    )
    add_sharding_args(p, "units")
    p.add_argument(
        "--data",
        help="data set for the comparison: test (FashionMNIST) or a folder "
        "[test for 28x28 grayscale models]",
    )
    p.add_argument("--atlas", type=Path, help="a `convlens dissect` folder to add the pictures to")
    p.add_argument("--out", type=Path, default=Path("visualize"), help="folder [visualize]")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from convlens.core.shards import Sharding
    from convlens.data.catalog import open_source
    from convlens.interpret import objectives, visualize
    from convlens.interpret.heads import default_layer
    from convlens.render import atlas, unit_figures

    if args.shards < 1:
        raise ValueError(f"--shards must be at least 1, got {args.shards}")
    state_dir = state_dir_of(args)
    loaded = load_model(args)
    model, p = loaded.model, loaded.preprocessing
    layer = args.layer
    if layer is None and args.objective != "class":
        probe = torch.zeros(1, p.channels, *p.input_size)
        layer = default_layer(model, probe)
    direction = _direction(args.direction) if args.direction else None
    fashion = p.channels == 1 and p.size == 28
    spec = args.data or ("test" if fashion else None)
    data = open_source(spec, p, args.data_dir) if spec else None
    if args.objective in ("direction", "layer"):
        units = None
    elif args.all or args.top is not None:
        width = visualize.layer_width(model, layer, p, args.size)
        units = list(range(width))
        if args.top is not None:
            units = _top_units(model, layer, units, args.top, data)
    elif args.units:
        units = parse_ints(args.units, "--units")
    else:
        raise ValueError("give --units K,K,..., --top N or --all (or --objective direction/layer)")
    objective = objectives.from_kind(args.objective, layer, units, direction)
    if args.negative:
        objective = -objective
    if args.diversity > 1 and args.diversity_weight:
        objective = objective - args.diversity_weight * objectives.diversity(layer)
    settings = visualize.VisualizeSettings(
        steps=args.steps,
        lr=args.lr,
        param=args.image_param,
        size=args.size,
        images=args.diversity,
        seed=args.seed,
        batch_size=args.batch_size,
    )
    sharding = Sharding(args.shards, args.ray, state_dir)
    result = visualize.visualize(
        model, objective, p, settings, data=data, progress=True, sharding=sharding
    )
    unit_figures.write_visualization(result, args.out, f"{loaded.name} {result.layer}")
    print(unit_figures.describe_visualization(result))
    print(f"wrote {args.out}")
    if args.atlas:
        added = atlas.add_to_atlas(result, args.atlas)
        print(f"added {added} pictures to {args.atlas / 'index.html'}")
    return 0


def _top_units(model: Any, layer: str | None, units: list[int], top: int, data: Any) -> list[int]:
    """The ``top`` units whose spatial-mean activation (or logit) is highest over ``data``."""
    from convlens.interpret.visualize import dataset_extremes

    if top < 1:
        raise ValueError(f"--top must be at least 1, got {top}")
    if data is None:
        raise ValueError("--top ranks units over a data set: give --data (test or a folder)")
    hi, _ = dataset_extremes(model, data, layer, units)
    return sorted(units[int(k)] for k in hi.argsort(descending=True)[:top])


def _direction(path: Path) -> Any:
    import numpy as np
    import torch

    if not path.is_file():
        raise ValueError(f"--direction {path} does not exist")
    if path.suffix == ".npy":
        return torch.from_numpy(np.load(path, allow_pickle=False)).float().flatten()
    try:
        value = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many exception types for a bad file
        raise ValueError(f"--direction {path} is not a readable .pt tensor ({e})") from e
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"--direction {path} holds a {type(value).__name__}, not a tensor")
    return value.float().flatten()
