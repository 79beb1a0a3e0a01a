"""Models: the FashionMNIST network (``fashion_cnn``), the official Places365 CNNs
(``places365``), the file formats of convlens runs (``formats``) and :func:`load`
(``zoo``), which turns a name or path into a :class:`LoadedModel`."""

from convlens.models.fashion_cnn import FashionCNN, build_model
from convlens.models.zoo import SHIPPED, LoadedModel, known_names, load, load_state

__all__ = [
    "SHIPPED",
    "FashionCNN",
    "LoadedModel",
    "build_model",
    "known_names",
    "load",
    "load_state",
]
