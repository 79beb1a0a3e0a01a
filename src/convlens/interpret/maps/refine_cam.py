"""Refine-CAM (Domeniconi et al., 2026, "How to Evaluate and Refine your CAM";
pytorch-grad-cam's and torchcam's ``RefineCAM``): the maps of one base method
(Grad-CAM++ by default) at several layers, each scaled to [0, 1], brought to one size
and multiplied. A deep layer knows which object, an early one where its edges are: the
product keeps the early layer's detail where the deep layer agrees, and drops the early
layer's noise elsewhere.

``layers``: the layers to fuse (two or more). By default, the method's layer (``layer``,
else the one CAM reads) and the last layers before it at the two next finer
resolutions (``layer2``, ``layer3``, ``layer4`` of a ResNet).

The references fuse at different sizes (``reference``): ``"pytorch-grad-cam"``
(default) resizes each layer's map to the input and scales it again before the product;
``"torchcam"`` resizes them to the finest layer's resolution."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from convlens.core.device import on_model_device
from convlens.core.hooks import eval_mode, get_layer, hooked
from convlens.interpret.heads import default_layer, input_probe
from convlens.interpret.maps import registry
from convlens.interpret.maps.base import ActivationMapMethod, Site, normalize_maps
from convlens.interpret.maps.cam import GradCAMpp

REFERENCES = ("pytorch-grad-cam", "torchcam")
BASES: tuple[str, ...] = registry.flags()["base"].choices or ()


@on_model_device
@torch.no_grad()
def finer_layers(model: nn.Module, x: torch.Tensor, layer: str, count: int = 3) -> tuple[str, ...]:
    """``layer`` and, before it, one layer at each of the ``count - 1`` next finer
    resolutions, finest first (fewer where the network has fewer resolutions): at each
    resolution the outermost module (the fewest dots in its name: a ResNet's ``layer3``,
    not a convolution inside it), the last of them that runs."""
    order: list[tuple[str, tuple[int, ...]]] = []

    def record(name: str) -> Callable[[nn.Module, object, object], None]:
        def hook(module: nn.Module, inputs: object, output: object) -> None:
            if isinstance(output, torch.Tensor) and output.ndim == 4:
                order.append((name, tuple(output.shape[2:])))

        return hook

    hooks = [(m, record(n)) for n, m in model.named_modules() if n]
    with eval_mode(model), hooked(hooks):
        model(input_probe(x))
    where = max(i for i, (n, _) in enumerate(order) if n == layer)
    by_size: dict[tuple[int, ...], str] = {}  # each finer resolution's outermost, last layer
    for name, shape in order[:where]:
        known = by_size.get(shape)
        if known is None or name.count(".") <= known.count("."):
            by_size[shape] = name
    chosen, size = [layer], order[where][1]
    for shape, name in sorted(by_size.items(), key=lambda item: item[0][0] * item[0][1]):
        if len(chosen) < count and shape[0] * shape[1] > size[0] * size[1]:
            chosen.insert(0, name)
            size = shape
    return tuple(chosen)


class RefineCAM(ActivationMapMethod):
    """Refine-CAM (see the module doc)."""

    def __init__(
        self,
        model: nn.Module,
        layer: str | None = None,
        layers: Sequence[str] | None = None,
        base: str = registry.REFINE_BASE,
        reference: str = "pytorch-grad-cam",
    ) -> None:
        super().__init__(model, layer)
        if reference not in REFERENCES:
            raise ValueError(
                f"`reference` must be one of {', '.join(REFERENCES)}, got {reference!r}"
            )
        if base not in BASES:
            raise ValueError(f"Refine-CAM's base must be one of {', '.join(BASES)}, got {base!r}")
        if layers is not None:
            layers = tuple(layers)
            if len(set(layers)) < 2:
                raise ValueError(
                    f"Refine-CAM fuses two layers or more, got {list(layers)}; "
                    "give them with `layers`"
                )
            for name in layers:
                get_layer(model, name)
        self.layers, self.base_name, self.reference = layers, base, reference

    def fused_layers(self, x: torch.Tensor) -> tuple[str, ...]:
        """The layers fused for inputs like ``x``."""
        if self.layers is not None:
            return self.layers
        layer = self.layer if self.layer is not None else default_layer(self.model, x)
        return finer_layers(self.model, x, layer)

    def locate(self, x: torch.Tensor) -> Site:
        layers = self.fused_layers(x)
        if len(layers) < 2:
            raise ValueError(
                f"the network has no finer resolution before {layers[0]!r} to refine it with; "
                f"give Refine-CAM two layers or more with `layers`"
            )
        return Site(",".join(layers))

    def forward(self, x: torch.Tensor, layer: str) -> tuple[torch.Tensor, torch.Tensor]:
        # the maps come from the base method at each layer; here only the logits and the
        # deepest layer's features, for the checks of the pipeline
        return super().forward(x, layer.split(",")[-1])

    def weighted_maps(
        self,
        x: torch.Tensor,
        site: Site,
        features: torch.Tensor,
        logits: torch.Tensor,
        classes: torch.Tensor,
    ) -> torch.Tensor:
        made = registry.method_class(self.base_name)
        options = (
            {"reference": "torchcam"}
            if issubclass(made, GradCAMpp) and self.reference == "torchcam"
            else {}
        )
        per_layer = [
            made(self.model, name, **options)(x, classes=classes).maps
            for name in site.layer.split(",")
        ]
        if self.reference == "torchcam":
            size = (max(m.shape[2] for m in per_layer), max(m.shape[3] for m in per_layer))
        else:
            size = (x.shape[2], x.shape[3])
        product = torch.ones((), device=x.device)
        for maps in per_layer:
            resized = F.interpolate(
                normalize_maps(maps.clamp_min(0)), size=size, mode="bilinear", align_corners=False
            )
            if self.reference == "pytorch-grad-cam":  # scales again after resizing
                resized = normalize_maps(resized.clamp_min(0))
            product = product * resized
        return product


__all__ = ["BASES", "REFERENCES", "RefineCAM", "finer_layers"]
