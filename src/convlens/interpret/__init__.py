"""Interpreting any CNN: kernels (``filters``), feature maps of units and region
matching (``units``), class activation maps (``cam``) and unit ablation
(``ablation``). Tensors in, tensors or small dataclasses out; pictures are drawn in
:mod:`convlens.render`."""
