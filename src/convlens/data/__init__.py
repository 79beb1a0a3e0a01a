"""Data: the FashionMNIST set (``fashion_mnist``) and image files turned into model
inputs (``images``). Imports only :mod:`convlens.core`."""
