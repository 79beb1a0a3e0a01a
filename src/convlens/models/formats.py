"""The files convlens writes for its own networks: a finished model (``model.pt``) and
a training checkpoint (``checkpoint.pt``). Both are dicts of tensors and plain values,
loadable with ``torch.load(weights_only=True)``."""

from __future__ import annotations

from typing import Any

from torch import nn

from convlens.config import TrainConfig
from convlens.data import fashion_mnist as fm

CHECKPOINT_FORMAT = "convlens.checkpoint"
MODEL_FORMAT = "convlens.model"
FORMAT_VERSION = 1
FORMATS = (MODEL_FORMAT, CHECKPOINT_FORMAT)
MODEL_FILE = "model.pt"  # the names these files have in a run directory
CHECKPOINT_FILE = "checkpoint.pt"


def model_record(model: nn.Module, config: TrainConfig, metrics: dict[str, Any]) -> dict[str, Any]:
    """What ``model.pt`` holds: weights plus everything needed to rebuild and use them."""
    return {
        "format": MODEL_FORMAT,
        "version": FORMAT_VERSION,
        "arch": "fashion-cnn",
        "config": config.to_dict(),
        "classes": list(fm.CLASSES),
        "preprocessing": fm.PREPROCESSING.to_dict(),
        "metrics": metrics,
        "model": {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
    }


__all__ = [
    "CHECKPOINT_FILE",
    "CHECKPOINT_FORMAT",
    "FORMATS",
    "FORMAT_VERSION",
    "MODEL_FILE",
    "MODEL_FORMAT",
    "model_record",
]
