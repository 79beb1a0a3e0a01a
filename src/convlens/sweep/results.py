"""Reading a sweep's finished trials, and their tables."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from convlens.core.fileio import markdown_table
from convlens.sweep._optuna import TrialState
from convlens.sweep.spec import SweepSpec, format_value, subject
from convlens.sweep.worker import open_storage, open_study

# ----------------------------------------------------------------------------- results


@dataclass(frozen=True)
class TrialResult:
    number: int
    point: dict[str, Any]
    train_top1: float
    val_top1: float
    test_top1: float | None
    seconds: float | None
    curve: list[float]
    train_curve: list[float]


@dataclass(frozen=True)
class SweepResults:
    """Finished trials of a sweep and what is needed to plot them."""

    spec: SweepSpec
    trials: list[TrialResult]  # sorted by validation top-1, best first
    failed: list[dict[str, Any]]  # points whose training diverged
    pending: int  # trials queued or running

    @property
    def baseline(self) -> TrialResult | None:
        return next((t for t in self.trials if not t.point), None)

    def varied(self) -> list[str]:
        """Hyperparameters the sweep varies, in first-seen order."""
        names: list[str] = []
        for p in self.spec.points:
            names += [k for k in p if k not in names]
        names += [k for k in [*self.spec.ranges, *self.spec.choices] if k not in names]
        return names

    def series(self, name: str) -> list[TrialResult]:
        """Trials that show how ``name`` matters: for presets, the points about ``name``
        (see :func:`subject`) and the baseline; for grids and searches, every trial."""
        if self.spec.kind == "preset":
            return [t for t in self.trials if not t.point or subject(t.point) == name]
        return [t for t in self.trials if name in t.point]

    def value(self, t: TrialResult, name: str) -> Any:
        return t.point.get(name, self.spec.base.get(name))


def load_results(
    sweep_dir: str | os.PathLike[str] | None = None,
    storage_url: str | None = None,
    study_name: str | None = None,
) -> SweepResults:
    """Read a sweep's trials from its storage (located through ``sweep.json``).

    Raises:
        ValueError: no sweep there.
    """
    if sweep_dir is not None and (storage_url is None or study_name is None):
        meta_path = Path(sweep_dir) / "sweep.json"
        if not meta_path.is_file():
            raise ValueError(f"{sweep_dir} is not a sweep directory (no sweep.json)")
        meta = json.loads(meta_path.read_text())
        storage_url = storage_url or meta["storage"]
        study_name = study_name or meta["study"]
    if storage_url is None or study_name is None:
        raise ValueError("give a sweep directory, or `storage_url` and `study_name`")
    study, spec = open_study(open_storage(storage_url), study_name, None, wait=0)
    done, failed, pending = [], [], 0
    for t in study.get_trials(deepcopy=False):
        if t.state == TrialState.COMPLETE:
            done.append(
                TrialResult(
                    t.number,
                    dict(t.user_attrs.get("point", {})),
                    float(t.user_attrs["train_top1"]),
                    float(t.user_attrs["val_top1"]),
                    t.user_attrs.get("test_top1"),
                    t.user_attrs.get("seconds"),
                    list(t.user_attrs.get("curve", [])),
                    list(t.user_attrs.get("train_curve", [])),
                )
            )
        elif t.state == TrialState.FAIL and not (
            t.user_attrs.get("dead") or t.user_attrs.get("stale")
        ):  # diverged; dead and stale attempts were queued again
            failed.append({"point": t.user_attrs.get("point"), "error": t.user_attrs.get("error")})
        elif t.state in (TrialState.WAITING, TrialState.RUNNING):
            pending += 1
    done.sort(key=lambda r: (-r.val_top1, r.number))
    return SweepResults(spec, done, failed, pending)


def results_rows(results: SweepResults) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the finished trials, best validation top-1 first; test top-1
    is shown for the best trial only (it is not used for selection)."""
    names = results.varied()
    header = ["rank", *names, "train top-1", "val top-1", "test top-1", "seconds"]
    rows = []
    for i, t in enumerate(results.trials):
        test = f"{t.test_top1:.4f}" if i == 0 and t.test_top1 is not None else ""
        seconds = f"{t.seconds:.0f}" if t.seconds else ""
        vals = [
            format_value(results.value(t, n)) + ("" if n in t.point else " (base)") for n in names
        ]
        rows.append([str(i + 1), *vals, f"{t.train_top1:.4f}", f"{t.val_top1:.4f}", test, seconds])
    return header, rows


def results_table(results: SweepResults) -> tuple[str, str]:
    """``(csv, markdown)`` of :func:`results_rows`."""
    header, rows = results_rows(results)
    csv_lines = [",".join(header)] + [
        ",".join(f'"{c}"' if "," in c else c for c in r) for r in rows
    ]
    return "\n".join(csv_lines) + "\n", markdown_table(header, rows)


LOG_FIELDS = ("lr", "weight_decay")  # always drawn on a log axis when positive


def is_log_scale(values: Sequence[Any], name: str = "") -> bool:
    """Positive numbers that are learning rates or weight decays, or that span at
    least a factor of 10: draw on a log axis."""
    nums = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    if len(nums) != len(values) or not nums or min(nums) <= 0 or not math.isfinite(max(nums)):
        return False
    return name in LOG_FIELDS or max(nums) / min(nums) >= 10 - 1e-9


__all__ = [
    "LOG_FIELDS",
    "SweepResults",
    "TrialResult",
    "is_log_scale",
    "load_results",
    "results_rows",
    "results_table",
]
