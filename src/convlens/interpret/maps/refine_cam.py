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

import warnings
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from convlens.core.device import on_model_device
from convlens.core.hooks import eval_mode, get_layer, hooked
from convlens.interpret.heads import default_layer, input_probe
from convlens.interpret.maps import registry
from convlens.interpret.maps.base import Site, normalize_maps
from convlens.interpret.maps.cam import GradientMethod, gradient_base, graph_forward


class NothingToRefineWarning(UserWarning):
    """Refine-CAM's default layers found no finer resolution: it maps one layer."""


# a convolution's or a normalisation's raw output, never chosen for the user: its signs
# mix, where Grad-CAM++'s weights are ill-conditioned (sum(A) g^3 can near -2 g^2)
RAW = (nn.Conv2d, nn.modules.batchnorm._BatchNorm)


@on_model_device
@torch.no_grad()
def finer_layers(model: nn.Module, x: torch.Tensor, layer: str, count: int = 3) -> tuple[str, ...]:
    """``layer`` and, before it, one layer at each of the ``count - 1`` next finer
    resolutions, finest first (fewer where the network has fewer resolutions): at each
    resolution the outermost module (the fewest dots in its name: a ResNet's ``layer3``,
    not a convolution inside it), the last of them that runs; never a convolution's or a
    normalisation's raw output (:data:`RAW`)."""
    order: list[tuple[str, tuple[int, ...], bool]] = []  # (name, size, a raw output)

    def record(name: str) -> Callable[[nn.Module, object, object], None]:
        def hook(module: nn.Module, inputs: object, output: object) -> None:
            if isinstance(output, torch.Tensor) and output.ndim == 4:
                order.append((name, tuple(output.shape[2:]), isinstance(module, RAW)))

        return hook

    hooks = [(m, record(n)) for n, m in model.named_modules() if n]
    with eval_mode(model), hooked(hooks):
        model(input_probe(x))
    where = max(i for i, (n, _, _) in enumerate(order) if n == layer)
    by_size: dict[tuple[int, ...], str] = {}  # each finer resolution's outermost, last layer
    for name, shape, raw in order[:where]:
        known = by_size.get(shape)
        if raw:
            continue
        if known is None or name.count(".") <= known.count("."):
            by_size[shape] = name
    chosen, size = [layer], order[where][1]
    for shape, name in sorted(by_size.items(), key=lambda item: item[0][0] * item[0][1]):
        if len(chosen) < count and shape[0] * shape[1] > size[0] * size[1]:
            chosen.insert(0, name)
            size = shape
    return tuple(chosen)


class RefineCAM(GradientMethod):
    """Refine-CAM (see the module doc). One forward pass, and one backward pass per
    target class, serve every fused layer (as torchcam's multi-layer extractors do)."""

    relu = False  # a product of maps rectified and scaled to [0, 1]

    def __init__(
        self,
        model: nn.Module,
        layer: str | None = None,
        layers: Sequence[str] | None = None,
        base: str = registry.REFINE_BASE,
        reference: str = "pytorch-grad-cam",
    ) -> None:
        super().__init__(model, layer)
        self.base = gradient_base(model, layer, base, reference, "Refine-CAM")
        if layers is not None:
            layers = tuple(layers)
            if len(set(layers)) < 2:
                raise ValueError(
                    f"Refine-CAM fuses two layers or more, got {list(layers)}; "
                    "give them with `layers`"
                )
            for name in layers:
                get_layer(model, name)
        self.layers, self.reference = layers, reference
        self.outputs: list[torch.Tensor] = []  # set by forward, used by the same call

    def fused_layers(self, x: torch.Tensor) -> tuple[str, ...]:
        """The layers fused for inputs like ``x``."""
        if self.layers is not None:
            return self.layers
        layer = self.layer if self.layer is not None else default_layer(self.model, x)
        return finer_layers(self.model, x, layer)

    def locate(self, x: torch.Tensor) -> Site:
        layers = self.fused_layers(x)
        if len(layers) < 2:  # only by default: `layers` given are two or more
            warnings.warn(
                NothingToRefineWarning(
                    f"the network has no finer resolution before {layers[0]!r} to refine it "
                    f"with: Refine-CAM is its base method's map there; give it two layers or "
                    f"more with `layers`"
                ),
                stacklevel=3,
            )
        return Site(",".join(layers))

    def forward(self, x: torch.Tensor, layer: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The logits and the deepest layer's features; every fused layer's output, with
        its graph, goes to :meth:`weighted_maps` of the same call."""
        logits, self.outputs = graph_forward(self.model, x, layer.split(","))
        return logits, self.outputs[-1]

    def weighted_maps(
        self,
        x: torch.Tensor,
        site: Site,
        features: torch.Tensor,
        logits: torch.Tensor,
        classes: torch.Tensor,
    ) -> torch.Tensor:
        outputs, self.outputs = self.outputs, []
        last = classes.shape[1] - 1
        grads = [
            torch.autograd.grad(logits.gather(1, classes[:, t : t + 1]).sum(), outputs,
                                retain_graph=t < last)
            for t in range(classes.shape[1])
        ]  # fmt: skip
        per_layer = []
        for i, acts in enumerate(outputs):
            g = torch.stack([grad[i].float() for grad in grads], 1)  # [N, T, C, h, w]
            alpha = self.base.weights_from(g, acts.detach())
            if alpha.ndim == 3:
                alpha = alpha[..., None, None]
            per_layer.append((alpha * acts.detach()[:, None]).sum(2).clamp_min(0))
        if self.reference == "torchcam":
            size = (max(m.shape[2] for m in per_layer), max(m.shape[3] for m in per_layer))
        else:
            size = (x.shape[2], x.shape[3])
        product = torch.ones((), device=x.device)
        for maps in per_layer:
            resized = F.interpolate(
                normalize_maps(maps), size=size, mode="bilinear", align_corners=False
            )
            if self.reference == "pytorch-grad-cam":  # scales again after resizing
                resized = normalize_maps(resized.clamp_min(0))
            product = product * resized
        return product


__all__ = ["NothingToRefineWarning", "RefineCAM", "finer_layers"]
