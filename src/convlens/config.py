"""The training configuration: one frozen dataclass, written into every run."""

from __future__ import annotations

import dataclasses
import json
import os
import tomllib
import typing
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Fields added to TrainConfig after runs were first saved, with the value that
# reproduces a saved run that lacks them.
ADDED_LATER: dict[str, Any] = {"sizes": []}  # before: full 28 px in every epoch

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
)
INITS = ("default", "kaiming", "xavier", "orthogonal")
PRECISIONS = ("auto", "fp32", "bf16")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run. Units are in the comments."""

    # data
    val_size: int = 10_000  # images held out of the 60k training set for model selection
    train_subset: int = 0  # use only this many training images (0 = all); for quick tests
    augment: str = "flip"  # one of AUGMENTATIONS, '+' combines (see docs/experiments.md)
    crop_pad: int = 2  # pixels of zero padding for random-translation crops
    # training image side per epoch, the last one repeated (() = 28 px throughout); the
    # default trains 5 epochs on images shrunk to 20 px (half the FLOPs), then 28 px
    sizes: tuple[int, ...] = (20, 20, 20, 20, 20, 28)
    # model
    widths: tuple[int, ...] = (32, 64, 128)  # channels of each stage (pooled to 14, 7, 7 px)
    depth: tuple[int, ...] = (1, 2, 2)  # conv layers per stage
    dropout: float = 0.0  # dropout probability before the linear layer
    init: str = "kaiming"  # weight initialisation, one of INITS
    # optimisation
    epochs: int = 10
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
        parts = self.augment.split("+")
        if self.augment != "none" and not set(parts) <= {"flip", "crop", "erase"}:
            raise ValueError(
                f"augment={self.augment!r}: use 'none' or a '+'-joined choice of flip, crop, erase"
            )
        if len(self.widths) != len(self.depth) or not self.widths:
            raise ValueError(
                f"widths {self.widths} and depth {self.depth} must be non-empty and equally long"
            )
        if any(w < 1 for w in self.widths) or any(d < 1 for d in self.depth):
            raise ValueError("widths and depth must be positive")
        if any(not 8 <= v <= 28 for v in self.sizes):
            raise ValueError(f"sizes {self.sizes}: each training image side must be in 8..28")
        if len(self.widths) > 3:
            raise ValueError("at most 3 stages: 28x28 images are pooled to 7x7 by stage 3")
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        for name in ("dropout", "label_smoothing", "ema_decay", "warmup"):
            v = getattr(self, name)
            if not 0.0 <= v < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {v}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")

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
            raise ValueError(f"--set {text!r}: expected FIELD=VALUE")
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
