"""Training the FashionMNIST networks: the loop (``loop``), the run directory format
(``rundir``) and batched augmentation (``augment``). The configuration itself is
:mod:`convlens.config`; devices and precision are in :mod:`convlens.core.device`."""

from convlens.training.loop import (
    NonFiniteLossError,
    RunExistsError,
    TrainResult,
    resume,
    train,
    train_one_epoch,
)

__all__ = [
    "NonFiniteLossError",
    "RunExistsError",
    "TrainResult",
    "resume",
    "train",
    "train_one_epoch",
]
