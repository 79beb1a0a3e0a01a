"""What a sweep runs: parameter texts, presets and the :class:`SweepSpec` stored in the
study, so that every worker runs the same points. Imports no Optuna."""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from convlens.config import TrainConfig, coerce, field_type


@dataclass(frozen=True)
class Range:
    """A numeric search range: ``log:LO:HI``, ``float:LO:HI`` or ``int:LO:HI``."""

    kind: str
    low: float
    high: float


def parse_param(text: str) -> tuple[str, list[Any] | Range]:
    """``name=v1,v2,...`` (values) or ``name=log:lo:hi`` / ``float:lo:hi`` / ``int:lo:hi``.

    Values are converted to the config field's type; tuple fields take ``16x32x64``.

    Raises:
        ValueError: malformed text, unknown field, or a value of the wrong type.
    """
    name, sep, rest = text.partition("=")
    name = name.strip().replace("-", "_")
    if not sep or not name or not rest:
        raise ValueError(f"parameter {text!r}: expected NAME=V1,V2,... or NAME=log:LO:HI")
    field_type(name)  # unknown field -> ValueError listing the valid ones
    head, _, tail = rest.partition(":")
    if head in ("log", "float", "int") and tail:
        try:
            lo, hi = (float(v) for v in tail.split(":"))
        except ValueError as e:
            raise ValueError(f"parameter {text!r}: expected {head}:LO:HI with two numbers") from e
        if not lo < hi or (head == "log" and lo <= 0):
            raise ValueError(f"parameter {text!r}: need 0 < LO < HI for log, LO < HI otherwise")
        if field_type(name) not in (int, float):
            raise ValueError(f"parameter {text!r}: {name} is not numeric, give a list of values")
        return name, Range(head, lo, hi)
    values = [coerce(name, v.strip()) for v in rest.split(",") if v.strip()]
    if not values:
        raise ValueError(f"parameter {text!r}: no values")
    return name, values


def json_value(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


# One hyperparameter at a time around the baseline (TrainConfig's defaults). Each
# point is a dict of overrides: the hyperparameter it is about (its subject, see
# subject()), plus companions it needs (Adam at SGD's learning rate would diverge).
PRESETS: dict[str, list[dict[str, Any]]] = {
    "augmentation": [
        {"augment": a} for a in ("none", "flip", "crop", "erase", "flip+crop", "flip+crop+erase")
    ],
    "init": [{"init": i} for i in ("default", "xavier", "orthogonal")],
    "architecture": [
        {"depth": [1, 1, 1]},
        {"depth": [2, 2, 2]},
        {"widths": [16, 32, 64]},
        {"widths": [48, 96, 192]},
    ],
    "optimizer": [
        {"optimizer": "adam", "lr": 2e-3, "weight_decay": 0.0},
        {"optimizer": "adamw", "lr": 2e-3, "weight_decay": 0.05},
    ],
    "lr": [
        *({"lr": lr} for lr in (0.05, 0.1, 0.2, 0.8)),
        *({"schedule": s} for s in ("constant", "step", "cosine")),
    ],
    "regularization": [
        *({"weight_decay": wd} for wd in (0.0, 5e-5, 2e-3)),
        *({"dropout": p} for p in (0.2, 0.4)),
        *({"label_smoothing": s} for s in (0.0, 0.2)),
    ],
}


@dataclass(frozen=True)
class SweepSpec:
    """What a study runs; stored in the study so every worker runs the same thing."""

    base: dict[str, Any]  # the baseline config
    points: list[dict[str, Any]] = field(default_factory=list)  # fixed points (overrides)
    kind: str = "grid"  # grid | preset | search
    ranges: dict[str, dict[str, Any]] = field(default_factory=dict)  # search: name -> range
    choices: dict[str, list[Any]] = field(default_factory=dict)  # search: name -> values
    sampler: str = "tpe"  # search: random | tpe
    trials: int = 0  # search: trials in all
    seed: int = 0

    def to_json(self) -> str:
        return json.dumps(self.__dict__)

    @classmethod
    def from_json(cls, text: str) -> SweepSpec:
        return cls(**json.loads(text))


def make_spec(
    base: TrainConfig,
    params: Sequence[str] = (),
    presets: Sequence[str] = (),
    trials: int | None = None,
    sampler: str | None = None,
    seed: int = 0,
) -> SweepSpec:
    """Build a sweep from ``--param`` texts and/or preset names.

    Lists of values without ranges make a grid (every combination); presets add their
    points and the baseline; any range makes it a search of ``trials`` trials with
    ``sampler`` (``tpe`` by default, or ``random``).
    """
    # Long because it checks every way the texts can disagree before anything runs.
    if not params and not presets:
        raise ValueError("give `params` (NAME=VALUES) or `presets` (names)")
    unknown = [p for p in presets if p not in PRESETS and p != "all"]
    if unknown:
        raise ValueError(f"unknown preset(s) {unknown}; choose from {', '.join(PRESETS)} or all")
    parsed = [parse_param(p) for p in params]
    names = [n for n, _ in parsed]
    if len(set(names)) != len(names):
        raise ValueError(f"a hyperparameter is given twice in `params`: {names}")
    base_dict = base.to_dict()
    if any(isinstance(v, Range) for _, v in parsed) or sampler in ("random", "tpe"):
        if presets:
            raise ValueError("presets are fixed points; do not mix them with a search")
        if not trials or trials < 1:
            raise ValueError("a search needs `trials` N >= 1")
        ranges = {
            n: {"kind": v.kind, "low": v.low, "high": v.high}
            for n, v in parsed
            if isinstance(v, Range)
        }
        choices = {n: [json_value(x) for x in v] for n, v in parsed if not isinstance(v, Range)}
        return SweepSpec(
            base_dict,
            kind="search",
            ranges=ranges,
            choices=choices,
            sampler=sampler or "tpe",
            trials=trials,
            seed=seed,
        )
    if sampler not in (None, "grid"):
        raise ValueError(f"unknown sampler {sampler!r}; choose grid, random or tpe")
    points: list[dict[str, Any]] = []
    if presets:
        chosen = list(PRESETS) if "all" in presets else list(dict.fromkeys(presets))
        points.append({})  # the baseline
        for name in chosen:
            for p in PRESETS[name]:
                # A preset point that is the baseline itself runs once, as the baseline.
                same = all(base_dict.get(k) == json_value(v) for k, v in p.items())
                points.append({} if same else dict(p))
    if parsed:
        lists = [[(n, json_value(x)) for x in v] for n, v in parsed if isinstance(v, list)]
        points += [dict(combo) for combo in itertools.product(*lists)]
    unique: list[dict[str, Any]] = []
    for p in points:
        TrainConfig.from_dict({**base_dict, **p}).check_trainable()  # each must be valid
        if p not in unique:
            unique.append(p)
    kind = "preset" if presets and not parsed else "grid"
    return SweepSpec(base_dict, points=unique, kind=kind, seed=seed)


# Keys that a preset point sets only so that its subject works; see subject().
COMPANIONS = ("lr", "weight_decay")


def subject(point: dict[str, Any]) -> str | None:
    """The hyperparameter a preset point is about: its key that is not a companion
    (``{"optimizer": "adam", "lr": 2e-3}`` is about ``optimizer``), or its only key
    (``{"lr": 0.1}``); ``None`` for the baseline."""
    if not point:
        return None
    own = [k for k in point if k not in COMPANIONS]
    if len(own) > 1:
        raise ValueError(f"preset point {point} varies {own} at once; give it one subject")
    return own[0] if own else next(iter(point))


def format_value(v: Any) -> str:
    """A hyperparameter value as tables and axes show it: ``0.1``, ``32x64x128``."""
    if isinstance(v, list | tuple):
        return "x".join(map(str, v))
    return f"{v:g}" if isinstance(v, float) else str(v)


def point_key(params: dict[str, Any]) -> str:
    """A readable, file-system-safe name for a point: ``lr=0.1,optimizer=adam``."""
    if not params:
        return "baseline"
    parts = []
    for k in sorted(params):
        v = params[k]
        v = "x".join(map(str, v)) if isinstance(v, list | tuple) else str(v)
        parts.append(f"{k}={v}")
    key = ",".join(parts).replace("/", "_").replace(" ", "")
    # str hash() differs between processes; run directories must not.
    return key if len(key) <= 120 else key[:100] + "-" + hashlib.sha1(key.encode()).hexdigest()[:8]


__all__ = [
    "COMPANIONS",
    "PRESETS",
    "Range",
    "SweepSpec",
    "format_value",
    "json_value",
    "make_spec",
    "parse_param",
    "point_key",
    "subject",
]
