"""Models: the FashionMNIST network (``fashion_cnn``), LeNet (``lenet``), the official
Places365 CNNs (``places365``), the file formats of convlens runs (``formats``) and
:func:`load` (``zoo``), which turns a name or path into a :class:`LoadedModel`."""

from convlens.models.fashion_cnn import FashionCNN, build_model
from convlens.models.lenet import LeNet
from convlens.models.zoo import SHIPPED, LoadedModel, known_names, load, load_state

__all__ = [
    "SHIPPED",
    "FashionCNN",
    "LeNet",
    "LoadedModel",
    "build_model",
    "known_names",
    "load",
    "load_state",
]
