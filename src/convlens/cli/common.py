"""Arguments and helpers shared by the subcommands.

Subcommand modules import only the standard library and this module at start-up, so
that ``convlens --help`` answers at once; torch and the analysis modules are imported
inside each command's ``run``.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from convlens.interpret.maps import registry

if TYPE_CHECKING:
    import torch

    from convlens import models
    from convlens.data import images

MODEL_HELP = (
    "fashion-cnn, a run directory or checkpoint, places365-resnet18|50, "
    "places365-wideresnet18, torchvision:NAME or timm:NAME"
)
IMAGE_HELP = "an image file, or test:N for FashionMNIST test image N (28x28 models)"


def add_model_args(p: argparse.ArgumentParser) -> None:
    """MODEL, ``--weights`` and ``--data-dir``: the same for every command that loads a
    model and reads images."""
    p.add_argument("model", metavar="MODEL", help=MODEL_HELP)
    p.add_argument(
        "--weights",
        metavar="PATH",
        help="checkpoint file for places365-*, torchvision:* or timm:* (offline use; "
        ".safetensors too for timm), or a convlens model file for fashion-cnn; 'none' for "
        "random torchvision or timm weights",
    )
    p.add_argument("--data-dir", help="folder holding the FashionMNIST .gz files (for test:N)")
    add_device_args(p)


def add_device_args(p: argparse.ArgumentParser) -> None:
    """``--device`` and ``--precision``: the same on every command that runs a model."""
    p.add_argument(
        "--device",
        default="auto",
        help="where the model runs: auto (CUDA, then MPS, then the CPU), cpu, cuda, cuda:N "
        "or mps [auto]",
    )
    p.add_argument(
        "--precision",
        choices=("fp32", "bf16", "fp16", "auto"),
        default="fp32",
        help="the analyses' arithmetic: fp32 (equal to the reference libraries), bf16 or "
        "fp16 (autocast; bf16 needs a CPU with AVX512-BF16 or AMX, or a GPU), auto (bf16 "
        "where the hardware has it, for the analyses measured to agree with fp32; "
        "docs/precision.md) [fp32]",
    )
    p.set_defaults(analysis_precision=True)


def add_sharding_args(p: argparse.ArgumentParser, items: str = "images") -> None:
    """``--shards``, ``--ray`` and ``--state-dir``: a job over a data set (or over a
    layer's units) in shards."""
    p.add_argument(
        "--shards",
        type=int,
        default=1,
        help=f"split the {items} into this many shards, whose results merge exactly (the "
        "answer is the same for any number); finished shards are kept in --state-dir [1]",
    )
    p.add_argument(
        "--ray",
        metavar="ADDRESS",
        help="run the shards on Ray: local, local:N (a cluster of N CPUs on this machine) "
        "or the address of a running cluster (ray start --head); needs convlens[ray]",
    )
    p.add_argument(
        "--state-dir",
        type=Path,
        help="where finished shards are kept, so that a rerun computes only the missing "
        "ones [OUT/shards with --shards > 1 or --ray]",
    )


def state_dir_of(args: argparse.Namespace) -> Path | None:
    """``--state-dir``, by default OUT/shards for a job in shards or on Ray; the hint
    shown on an interrupt says the finished shards are kept there."""
    state_dir: Path | None = args.state_dir
    if state_dir is None and (args.shards > 1 or args.ray):
        state_dir = Path(args.out) / "shards"
    if state_dir is not None:
        args.interrupt_hint = f"finished shards are kept in {state_dir}; rerun to resume"
    return state_dir


def add_image_args(p: argparse.ArgumentParser, nargs: str | None = None) -> None:
    """The IMAGE argument: one (``nargs=None``) or several (``'+'``, ``'*'``).

    Every command takes MODEL, then its images before or after the options, or on both
    sides. argparse alone cannot do that for several images: it fills them (empty, for
    ``'*'``) from the first run of positionals and calls the images after the options
    unrecognised; :func:`parse_args` gives such a command those images too.
    """
    if nargs is None:
        p.add_argument("image", metavar="IMAGE", help=IMAGE_HELP)
    else:
        p.add_argument("images", nargs=nargs, metavar="IMAGE", help=IMAGE_HELP + "; several")
    p.set_defaults(images_anywhere=nargs is not None)


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """``parser.parse_args(argv)``, except that a command of several images (see
    :func:`add_image_args`) also takes those given after its options."""
    args, extra = parser.parse_known_args(argv)
    if (
        extra
        and getattr(args, "images_anywhere", False)
        and not any(e.startswith("-") for e in extra)
    ):
        args.images.extend(extra)
    elif extra:
        args.parser_of.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def check_device(args: argparse.Namespace) -> None:
    """Refuse a ``--device`` that is not here, or a ``--precision`` it has no hardware
    for, before the command does anything."""
    if not isinstance(getattr(args, "device", None), str):
        return
    from convlens.core.device import resolve_device
    from convlens.core.precision import check_precision

    device = resolve_device(args.device)
    if getattr(args, "analysis_precision", False):
        check_precision(args.precision, device)


def analysis_precision(args: argparse.Namespace) -> contextlib.AbstractContextManager[object]:
    """The command's ``--precision`` around its work (nothing for a command without it)."""
    if not getattr(args, "analysis_precision", False) or args.precision == "fp32":
        return contextlib.nullcontext()
    from convlens.core.device import resolve_device
    from convlens.core.precision import precision

    return precision(args.precision, resolve_device(args.device))


def load_model(args: argparse.Namespace) -> models.LoadedModel:
    """The command's model, on its ``--device`` (checked before the model loads)."""
    from convlens import models
    from convlens.core.device import resolve_device

    device = resolve_device(args.device)
    loaded = models.load(args.model, weights=getattr(args, "weights", None))
    loaded.model.to(device)
    return loaded


def load_inputs(
    specs: list[str],
    preprocessing: images.Preprocessing,
    data_dir: str | None = None,
) -> images.Inputs:
    """The images ``specs`` preprocessed as ``preprocessing`` says, in order: files, or
    ``test:N`` for FashionMNIST test image N (28x28 grayscale models only)."""
    from convlens.data import fashion_mnist, images

    if not specs:
        raise ValueError("no images given")
    parts, test = [], None
    for spec in specs:
        if not spec.startswith("test:"):
            parts.append(images.load_files([spec], preprocessing))
            continue
        if preprocessing.channels != 1 or preprocessing.size != 28:
            raise ValueError(
                f"{spec}: FashionMNIST test images fit 28x28 grayscale models only; "
                "give an image file"
            )
        test = test or fashion_mnist.load_fashion_mnist("test", data_dir)
        if not spec[5:].isdigit() or int(spec[5:]) >= len(test):
            raise ValueError(f"{spec}: expected test:N with N in 0..{len(test) - 1}")
        parts.append(fashion_mnist.as_inputs(test, [int(spec[5:])]))
    return images.stack_inputs(parts)


def model_inputs(
    args: argparse.Namespace, loaded: models.LoadedModel, specs: list[str]
) -> images.Inputs:
    """The command's images (``specs``: files or ``test:N``) preprocessed for ``loaded``."""
    return load_inputs(specs, loaded.preprocessing, args.data_dir)


def add_int_list(p: Any, flag: str, help: str, *aliases: str) -> None:
    """A flag that takes integers, the same way on every command: ``--units 0 1 2``,
    ``--units 0,1,2`` or both mixed (read with :func:`parse_ints`)."""
    p.add_argument(
        flag, *aliases, dest=flag.lstrip("-").replace("-", "_"), nargs="+", metavar="K",
        help=f"{help} (space- or comma-separated)",
    )  # fmt: skip


def parse_ints(text: str | Sequence[str], name: str) -> list[int]:
    """Integers given as ``"0,1,2"``, ``"0 1 2"`` or the words of an :func:`add_int_list`
    flag."""
    joined = text if isinstance(text, str) else " ".join(text)
    try:
        return [int(t) for t in joined.replace(",", " ").split()]
    except ValueError as e:
        raise ValueError(f"{name}: expected integers, got {joined!r}") from e


def region_mask(
    args: argparse.Namespace, inputs: images.Inputs, loaded: models.LoadedModel
) -> torch.Tensor | None:
    """The ``--region X0,Y0,X1,Y1`` box or ``--mask FILE`` of the first image as a boolean
    mask over the model input, or ``None`` when neither is given."""
    from convlens.data import images

    if args.region:
        try:
            x0, y0, x1, y1 = (float(v) for v in args.region.split(","))
        except ValueError as e:
            raise ValueError(f"--region takes four numbers x0,y0,x1,y1, got {args.region!r}") from e
        return images.region_from_box((x0, y0, x1, y1), inputs.sizes[0], loaded.preprocessing)
    if args.mask:
        return images.load_mask(args.mask, inputs.sizes[0], loaded.preprocessing)
    return None


def add_attribution_args(p: argparse.ArgumentParser, own: Sequence[str] = ()) -> None:
    """The options of the map methods that the CLI exposes (the method registry's flags);
    each is left to the method's default when not given. ``own``: flags the command
    already has for its own purpose: its ``--baseline`` serves the attributions too, its
    ``--batch-size`` is its own, and ``--steps`` becomes ``--ig-steps``."""
    g = p.add_argument_group("method options")
    for flag, option in registry.flags().items():
        if flag in own and flag != "steps":  # the command's own flag serves (or is kept apart)
            continue
        name = f"--ig-{flag}" if flag in own else f"--{flag}"
        kind = str if option.type is str else option.type
        g.add_argument(
            name,
            dest=_dest(flag),
            type=kind,
            choices=option.choices,
            help=option.help,
            metavar=None if option.choices else option.metavar or flag.split("-")[-1].upper(),
        )


def _dest(flag: str) -> str:
    return "ig_steps" if flag == "steps" else flag


def attribution_options(
    args: argparse.Namespace, methods: Sequence[str], own: Sequence[str] = ()
) -> dict[str, Any]:
    """The pixel-attribution options given on the command line, checked against
    ``methods``: an option none of them takes is an error, not ignored. ``own``: as for
    :func:`add_attribution_args` (the command passes its own ``baseline`` itself)."""
    names = {registry.flags()[f].name: _dest(f) for f in registry.flags() if f not in own}
    given = {k: getattr(args, a) for k, a in names.items() if getattr(args, a, None) is not None}
    if isinstance(given.get("baseline"), str):
        with contextlib.suppress(ValueError):  # a number, else a kind (zeros, blur, mean)
            given["baseline"] = float(given["baseline"])
    for k in given:
        takers = registry.takers(k)
        if not any(m in takers for m in methods):
            flag = "--steps (--ig-steps)" if k == "steps" else "--" + k.replace("_", "-")
            raise ValueError(f"{flag} is an option of {', '.join(takers)} only")
    return given


FIGURE_SUFFIXES = (".png", ".svg", ".pdf")


def add_figure_args(p: argparse.ArgumentParser, default: str) -> None:
    """``--out`` (a figure file: PNG, SVG or PDF by its suffix) and ``--dpi``: the same on
    every command that draws one figure."""
    p.add_argument("--out", type=Path, help=f"PNG, SVG or PDF file [{default}]")
    p.add_argument(
        "--dpi", type=int, default=150, help="pixels per inch of a PNG (and of the images "
        "inside an SVG or PDF) [150]"
    )  # fmt: skip


def figure_path(args: argparse.Namespace, default: str) -> Path:
    """The command's ``--out`` (or ``default``), checked: a suffix of a format that
    convlens writes, and a DPI that makes a picture."""
    out = args.out or Path(default)
    if out.suffix.lower() not in FIGURE_SUFFIXES:
        raise ValueError(
            f"--out {out}: write a figure as {', '.join(FIGURE_SUFFIXES)} (by its suffix)"
        )
    if not 10 <= args.dpi <= 1200:
        raise ValueError(f"--dpi must be in 10..1200, got {args.dpi}")
    return out


def add_sign_args(p: argparse.ArgumentParser) -> None:
    """How a pixel attribution is drawn: its sign mode and the clipping of outliers
    (:mod:`convlens.render.heatmaps`)."""
    g = p.add_argument_group("drawing pixel attributions")
    g.add_argument(
        "--sign",
        choices=registry.SIGNS,
        help="which attributions to draw: all (zero is white, red for the class, blue "
        "against), positive, negative or absolute [the method's own: "
        + ", ".join(f"{m.name} {m.sign}" for m in registry.METHODS if m.family == registry.PIXEL)
        + "]",
    )
    g.add_argument(
        "--clip",
        type=float,
        default=2.0,
        metavar="PERCENT",
        help="draw the top PERCENT of the total |attribution| saturated (captum's "
        "outlier_perc) [2]",
    )
