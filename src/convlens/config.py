"""The training configuration: one frozen dataclass, written into every run."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tomllib
import typing
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Fields added to TrainConfig after runs were first saved, with the value that
# reproduces a saved run that lacks them: runs saved before `sizes` trained at full
# 28 px in every epoch; runs saved before `low_res` followed their explicit `sizes`.
ADDED_LATER: dict[str, Any] = {
    "sizes": [],
    "low_res": 0.0,
    "low_res_size": 20,
    "backprop_fraction": 1.0,  # runs saved before selective backprop trained on every image
    "rank_every": 1,  # and before stale ranking, ranked every batch afresh
    "backprop_warmup": 0,  # and before the warm-up, selected from the first step
    "architecture": "fashion-cnn",  # and before LeNet, were all the default network
}
FULL_SIZE = 28  # FashionMNIST's side in pixels, the size every model is tested at

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "step", "cosine", "onecycle")
AUGMENTATIONS = (
    "none",
    "flip",
    "crop",
    "erase",
    "flip+crop",
    "flip+erase",
    "crop+erase",
    "flip+crop+erase",
    "altflip",
    "altflip+erase",
)
INITS = ("default", "kaiming", "xavier", "orthogonal")
# the default network (models/fashion_cnn.py) or LeNet (models/lenet.py: 28 px only)
ARCHITECTURES = ("fashion-cnn", "lenet")
PRECISIONS = ("auto", "fp32", "bf16")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run. Units are in the comments."""

    # data
    val_size: int = 10_000  # images held out of the 60k training set for model selection
    train_subset: int = 0  # use only this many training images (0 = all); for quick tests
    # train on the training labels permuted at random (seeded by `seed`), validation and
    # test labels left true: the data randomisation test of Adebayo et al. (2018)
    shuffle_labels: bool = False
    augment: str = "flip"  # one of AUGMENTATIONS, '+' combines (see docs/experiments.md)
    crop_pad: int = 2  # pixels of zero padding for random-translation crops
    # progressive resizing: the first floor(low_res * epochs) epochs train on images shrunk
    # to low_res_size px (20 px costs half the FLOPs of 28 px), the rest at the full 28 px,
    # so every run, however short, ends at the size it is tested at (0 = full size only)
    low_res: float = 0.5
    low_res_size: int = 20
    # explicit training image side per epoch, the last one repeated; overrides low_res
    # (written by runs made before low_res existed; () = use low_res)
    sizes: tuple[int, ...] = ()
    # model
    architecture: str = "fashion-cnn"  # one of ARCHITECTURES; lenet ignores widths to dropout
    widths: tuple[int, ...] = (32, 64, 128)  # channels of each stage (pooled to 14, 7, 7 px)
    depth: tuple[int, ...] = (1, 2, 2)  # conv layers per stage
    dropout: float = 0.0  # dropout probability before the linear layer
    init: str = "kaiming"  # weight initialisation, one of INITS
    # optimisation
    # 10, then 11, then 15 with backprop_fraction, then 24 with rank_every (docs/experiments.md)
    epochs: int = 24
    batch_size: int = 256  # images per step
    optimizer: str = "sgd"  # one of OPTIMIZERS
    lr: float = 0.5  # peak learning rate
    momentum: float = 0.9  # SGD momentum (beta1 for Adam)
    nesterov: bool = True
    weight_decay: float = 5e-4  # L2 coefficient (decoupled for AdamW)
    schedule: str = "onecycle"  # one of SCHEDULES
    warmup: float = 0.2  # fraction of all steps spent warming up (onecycle)
    label_smoothing: float = 0.1
    ema_decay: float = 0.0  # exponential weight averaging per step (0 = off)
    # Lookahead (airbench): every 5 steps the slow weights move toward the trained ones
    # and replace them; the slow weights' decay rises as (step / steps)^3 to this (0 = off)
    lookahead: float = 0.0
    # selective backprop: a no-grad forward pass ranks each batch by loss and only this
    # fraction of it, the highest losses, is trained on (1 = the whole batch); a step on
    # 35% costs about 0.7 of a full one
    backprop_fraction: float = 0.35
    # stale selective backprop (Jiang et al. 2019): the ranking pass runs only in every
    # rank_every-th epoch (the first included); the epochs between rank each batch by the
    # loss each image had when last seen, and skip the ranking pass (1 = rank every batch);
    # an epoch without it costs about 0.6 of one with it, which pays for 24 epochs, not 15
    rank_every: int = 3
    # selective backprop starts once the network has trained on this many images in full
    # (counted in whole epochs: an epoch that begins before this many images were seen
    # trains on every image); about one pass over FashionMNIST, so that a short run (a few
    # epochs, or a subset) trains on everything and a long run loses one cheap epoch
    backprop_warmup: int = 50_000
    # evaluation
    tta: bool = True  # final figures average the image and its mirror image's predictions
    # machinery
    seed: int = 0
    precision: str = "auto"  # 'auto' = bf16 autocast where the CPU/GPU supports it
    device: str = "auto"  # 'auto', 'cpu', 'cuda', 'cuda:1', ...
    threads: int = 0  # torch CPU threads (0 = torch's default)

    def __post_init__(self) -> None:
        _check_choice("optimizer", self.optimizer, OPTIMIZERS)
        _check_choice("schedule", self.schedule, SCHEDULES)
        _check_choice("init", self.init, INITS)
        _check_choice("precision", self.precision, PRECISIONS)
        _check_choice("architecture", self.architecture, ARCHITECTURES)
        if self.architecture == "lenet" and (self.low_res > 0 or set(self.sizes) - {FULL_SIZE}):
            raise ValueError(
                f"lenet takes {FULL_SIZE} px images only: set low_res=0 and no smaller sizes "
                "(the preset 'lenet' does)"
            )
        parts = self.augment.split("+")
        if self.augment != "none" and (
            not set(parts) <= {"flip", "altflip", "crop", "erase"}
            or {"flip", "altflip"} <= set(parts)
        ):
            raise ValueError(
                f"augment={self.augment!r}: use 'none' or a '+'-joined choice of flip (or "
                "altflip), crop, erase"
            )
        if len(self.widths) != len(self.depth) or not self.widths:
            raise ValueError(
                f"widths {self.widths} and depth {self.depth} must be non-empty and equally long"
            )
        if any(w < 1 for w in self.widths) or any(d < 1 for d in self.depth):
            raise ValueError("widths and depth must be positive")
        if any(not 8 <= v <= FULL_SIZE for v in (*self.sizes, self.low_res_size)):
            raise ValueError(
                f"sizes {self.sizes} / low_res_size {self.low_res_size}: each training image "
                f"side must be in 8..{FULL_SIZE}"
            )
        if len(self.widths) > 3:
            raise ValueError("at most 3 stages: 28x28 images are pooled to 7x7 by stage 3")
        for name in ("epochs", "batch_size", "rank_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        for name in ("dropout", "label_smoothing", "ema_decay", "lookahead", "warmup", "low_res"):
            v = getattr(self, name)
            if not 0.0 <= v < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {v}")
        if not 0.0 < self.backprop_fraction <= 1.0:
            raise ValueError(f"backprop_fraction must be in (0, 1], got {self.backprop_fraction}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.backprop_warmup < 0:
            raise ValueError(f"backprop_warmup must be >= 0, got {self.backprop_warmup}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Build a config from a mapping, rejecting unknown keys and coercing types."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - set(fields))
        if unknown:
            raise ValueError(
                f"unknown config key(s) {', '.join(unknown)}; valid keys: {', '.join(fields)}"
            )
        return cls(**{k: coerce(k, v) for k, v in d.items()})

    @classmethod
    def from_saved(cls, d: dict[str, Any]) -> TrainConfig:
        """Rebuild a config that convlens wrote out in full (a run's ``config.json``,
        a model file, a sweep study). Fields added after it was written take the value
        that reproduces how it was trained, not today's default."""
        return cls.from_dict({**ADDED_LATER, **d})

    def replace(self, **changes: Any) -> TrainConfig:
        return self.from_dict({**self.to_dict(), **changes})

    def image_size(self, epoch: int) -> int:
        """The side in pixels that training images have in ``epoch`` (0-based).

        With ``sizes`` given it is ``sizes[epoch]``, the last entry repeated. Otherwise
        the first ``floor(low_res * epochs)`` epochs use ``low_res_size`` and the rest
        28 px; as ``low_res < 1``, the last epoch always trains at full size.
        """
        if self.sizes:
            return self.sizes[min(epoch, len(self.sizes) - 1)]
        low_epochs = math.floor(self.low_res * self.epochs)
        return self.low_res_size if epoch < low_epochs else FULL_SIZE

    def selective_epoch(self, epoch: int, train_size: int) -> bool:
        """Whether ``epoch`` (0-based) of a run on ``train_size`` images trains on only
        the hardest ``backprop_fraction`` of each batch: once the images seen before the
        epoch reach ``backprop_warmup``."""
        return self.backprop_fraction < 1.0 and epoch * train_size >= self.backprop_warmup

    def check_trainable(self) -> None:
        """Raise ValueError when a new run of this config would end below full size
        (explicit ``sizes`` shorter than the run), so it would be tested at a size
        it never trained at. Saved runs are not checked: they resume as they were."""
        last = self.image_size(self.epochs - 1)
        if last != FULL_SIZE:
            raise ValueError(
                f"sizes {self.sizes} end at {last} px in epoch {self.epochs} of {self.epochs}, "
                f"but models are tested at {FULL_SIZE} px: end sizes with {FULL_SIZE}, or leave "
                "sizes empty and set low_res (the fraction of epochs at low_res_size)"
            )


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not one of {', '.join(choices)}")


def field_type(name: str) -> Any:
    hints = typing.get_type_hints(TrainConfig)
    if name not in hints:
        valid = ", ".join(f.name for f in dataclasses.fields(TrainConfig))
        raise ValueError(f"unknown config field {name!r}; valid fields: {valid}")
    return hints[name]


def coerce(name: str, value: Any) -> Any:
    """Convert ``value`` (a string from the command line, or a JSON value) to the field's type."""
    t = field_type(name)
    try:
        if t is bool:
            if isinstance(value, str):
                if value.lower() in ("1", "true", "yes", "on"):
                    return True
                if value.lower() in ("0", "false", "no", "off"):
                    return False
                raise ValueError(value)
            return bool(value)
        if t is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if t is float:
            return float(value)
        if t is str:
            return str(value)
        if typing.get_origin(t) is tuple:
            if isinstance(value, str):
                value = [v for v in value.replace("x", ",").split(",") if v]
            return tuple(int(v) for v in value)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name}: cannot read {value!r} as {getattr(t, '__name__', t)}") from e
    return value


def parse_sets(texts: Iterable[str]) -> dict[str, str]:
    """Config changes from ``--set FIELD=VALUE`` texts (values still text; ``replace``
    converts them). Raises ValueError for a text without ``=``."""
    changes = {}
    for text in texts:
        name, sep, value = text.partition("=")
        if not sep:
            raise ValueError(f"config change {text!r}: expected FIELD=VALUE")
        changes[name.strip().replace("-", "_")] = value
    return changes


def load_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a JSON or TOML config file into a dict (keys checked by ``from_dict``)."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise ValueError(f"cannot read config file {p}: {e.strerror}") from e
    try:
        data = tomllib.loads(text) if p.suffix == ".toml" else json.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as e:
        raise ValueError(
            f"config file {p} is not valid {p.suffix.lstrip('.') or 'JSON'}: {e}"
        ) from e
    if not isinstance(data, dict):
        raise ValueError(f"config file {p} must hold a mapping of config keys")
    return data


DEFAULT = TrainConfig()

# Named configurations (`convlens train --preset NAME`; flags and --config apply on top).
# "previous" is the default when the work on faster training (issue 13) began, 10 epochs
# on every image, kept so the benchmark can show both side by side; "no-warmup" is the
# default before the warm-up (selective backprop from the first step); "best" is the
# strongest configuration found for at most 15 minutes of 2-core CPU training: the
# default network twice as wide, for 28 epochs, with random erasing, every image trained
# on (docs/experiments.md). "shuffled-labels" trains on labels permuted at random, 10,000
# images for 40 epochs without augmentation, label smoothing or weight decay, so that the
# network memorises them (all of its training labels, measured; with the default's 54,000
# images and settings it stayed at chance): the network whose maps the data randomisation
# sanity check compares (docs/faithfulness.md). "lenet" trains LeNet at full size (it
# has no low-resolution phase), the network of Hedström et al.'s FashionMNIST sanity checks
# (benchmarks/hedstrom_lenet.py).
PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    "previous": {"epochs": 10, "backprop_fraction": 1.0, "rank_every": 1},
    "no-warmup": {"backprop_warmup": 0},
    "best": {
        "widths": (64, 128, 256),
        "epochs": 28,
        "augment": "flip+erase",
        "backprop_fraction": 1.0,
        "rank_every": 1,
    },
    "shuffled-labels": {
        "shuffle_labels": True,
        "train_subset": 10_000,
        "epochs": 40,
        "lr": 0.1,
        "weight_decay": 0.0,
        "augment": "none",
        "label_smoothing": 0.0,
        "backprop_fraction": 1.0,
        "rank_every": 1,
    },
    "lenet": {"architecture": "lenet", "low_res": 0.0, "lr": 0.1, "epochs": 20},
}


def preset(name: str) -> TrainConfig:
    """The configuration called ``name`` in :data:`PRESETS`."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; presets: {', '.join(PRESETS)}")
    return TrainConfig().replace(**PRESETS[name])


__all__ = [
    "ADDED_LATER",
    "ARCHITECTURES",
    "AUGMENTATIONS",
    "DEFAULT",
    "FULL_SIZE",
    "INITS",
    "OPTIMIZERS",
    "PRECISIONS",
    "PRESETS",
    "SCHEDULES",
    "TrainConfig",
    "coerce",
    "field_type",
    "load_config_file",
    "parse_sets",
    "preset",
]
