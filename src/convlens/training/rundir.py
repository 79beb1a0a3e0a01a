"""The run directory: ``config.json`` and ``metrics.json`` and ``checkpoint.pt`` after
every epoch (everything needed to resume), ``model.pt`` and ``summary.json`` at the end.
Every file is written atomically, so a run directory is always a consistent state."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import nn

from convlens.config import TrainConfig
from convlens.core.fileio import atomic_torch_save, atomic_write_json, load_checkpoint_file
from convlens.models.formats import (
    CHECKPOINT_FILE,
    CHECKPOINT_FORMAT,
    FORMAT_VERSION,
    MODEL_FILE,
    model_record,
)

CONFIG = "config.json"
METRICS = "metrics.json"
CHECKPOINT = CHECKPOINT_FILE
MODEL = MODEL_FILE
SUMMARY = "summary.json"


def load_run_config(run_dir: Path) -> TrainConfig:
    path = run_dir / CONFIG
    try:
        return TrainConfig.from_saved(json.loads(path.read_text()))
    except FileNotFoundError as e:
        raise ValueError(f"{run_dir} is not a convlens run directory (no config.json)") from e


def holds_run(run_dir: Path) -> bool:
    """True when ``run_dir`` holds a run, finished or not."""
    return (run_dir / CHECKPOINT).exists() or (run_dir / MODEL).exists()


def write_config(run_dir: Path, config: TrainConfig) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(run_dir / CONFIG, config.to_dict())


def read_checkpoint(run_dir: Path) -> dict[str, Any]:
    """The latest epoch's training state (see :func:`write_epoch`)."""
    return load_checkpoint_file(run_dir / CHECKPOINT, CHECKPOINT_FORMAT)


def write_epoch(run_dir: Path, state: dict[str, Any], metrics: list[dict[str, Any]]) -> None:
    """Save the training state after an epoch: ``state`` holds ``config``, ``epoch``,
    ``model``, ``optimizer``, ``average``, ``scheduler`` and ``rng``."""
    record = {"format": CHECKPOINT_FORMAT, "version": FORMAT_VERSION, **state, "metrics": metrics}
    atomic_torch_save(run_dir / CHECKPOINT, record)
    atomic_write_json(run_dir / METRICS, metrics)


def write_final(
    run_dir: Path, model: nn.Module, config: TrainConfig, summary: dict[str, Any]
) -> None:
    """Save the finished model and its summary figures."""
    atomic_torch_save(run_dir / MODEL, model_record(model, config, summary))
    atomic_write_json(run_dir / SUMMARY, summary)


__all__ = [
    "CHECKPOINT",
    "CONFIG",
    "METRICS",
    "MODEL",
    "SUMMARY",
    "holds_run",
    "load_run_config",
    "read_checkpoint",
    "write_config",
    "write_epoch",
    "write_final",
]
