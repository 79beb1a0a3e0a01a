"""Addressing layers by name and capturing their activations with forward hooks.

Layers are named as in ``model.named_modules()``: ``layer4``, ``layer4.1.conv2``,
``features.2.1``. Every hook is registered inside a context manager that removes it
in ``finally`` and restores the model's train/eval mode, also when the body raises.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from convlens.core.device import on_model_device


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` (and every submodule) in evaluation mode, restoring each module's
    own ``training`` flag on exit, also when the body raises. Only flags that differ
    are written (a model already in evaluation mode costs no per-module writes)."""
    modes = {m: m.training for m in model.modules()}
    if any(modes.values()):
        model.eval()
    try:
        yield model
    finally:
        for m, training in modes.items():
            if m.training != training:
                m.training = training


@contextmanager
def frozen(model: nn.Module) -> Iterator[nn.Module]:
    """Parameters that do not require grad inside the block (restored on exit, also
    when the body raises), for passes that differentiate with respect to inputs or
    activations only: the forward pass then records nothing for weight gradients, and
    the gradients are the same bits.
    Only the parameters that required grad are touched, so overlapping blocks on one
    model (the explorer's threads) end with every parameter as it was."""
    params = [p for p in model.parameters() if p.requires_grad]
    try:
        for p in params:
            p.requires_grad_(False)
        yield model
    finally:
        for p in params:
            p.requires_grad_(True)


def layer_names(model: nn.Module) -> list[str]:
    """Every addressable (non-root) module name of ``model``."""
    return [name for name, _ in model.named_modules() if name]


def conv_layer_names(model: nn.Module) -> list[str]:
    """Names of the ``nn.Conv2d`` modules of ``model``, in registration order."""
    return [name for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]


def get_layer(model: nn.Module, name: str) -> nn.Module:
    """The submodule called ``name``.

    Raises:
        ValueError: no such layer; the message suggests close names and lists the
            valid ones.
    """
    modules = dict(model.named_modules())
    if name and name in modules:
        return modules[name]
    valid = layer_names(model)
    close = difflib.get_close_matches(name, valid, n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    shown = ", ".join(valid) if len(valid) <= 40 else ", ".join(valid[:40]) + ", ..."
    raise ValueError(f"unknown layer {name!r}.{hint} Valid layers: {shown}")


@contextmanager
def hooked(hooks: Iterable[tuple[nn.Module, Callable[..., Any]]]) -> Iterator[None]:
    """Register each ``(module, forward hook)`` pair for the block; every handle is
    removed on exit, also when registering or the body raises. The one place convlens
    adds hooks (see :func:`hook_count`)."""
    handles = []
    try:
        for module, hook in hooks:
            handles.append(module.register_forward_hook(hook))
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def replaced(module: nn.Module, output: Callable[[], torch.Tensor]) -> Iterator[None]:
    """Inside the block, ``module`` does not run: a call returns ``output()`` instead, so
    the layers inside it cost nothing (the perturbation methods that replace a layer's
    output, such as Ablation-CAM). Its own ``forward`` is back on exit."""
    own = module.__dict__.get("forward")  # a forward set on the instance, kept
    module.forward = lambda *args, **kwargs: output()
    try:
        yield
    finally:
        if own is None:
            del module.forward
        else:
            module.forward = own


@contextmanager
def capture(
    model: nn.Module, layers: str | Sequence[str], *, detach: bool = True
) -> Iterator[dict[str, torch.Tensor]]:
    """Record the outputs of ``layers`` during forward passes inside the block.

    Yields a dict filled with ``{layer name: output}`` by each forward pass (the last
    pass wins). Hooks are removed on exit, also when the body raises.

    A stored output is the layer's output as it was when the layer returned, whatever
    follows it: the hook keeps the layer's own tensor and hands the rest of the network a
    copy, so that in-place operations after the layer (torchvision's ``ReLU(inplace=True)``
    after a BatchNorm or a conv, ResNet's ``out += identity``, densenet's functional
    ``relu(..., inplace=True)``) write the copy. This costs one copy of each captured
    output, not of the whole network's activations.

    Args:
        model: the network.
        layers: one name or several (see :func:`get_layer`).
        detach: store detached outputs (set ``False`` to keep the autograd graph,
            e.g. for Grad-CAM).
    """
    names = [layers] if isinstance(layers, str) else list(layers)
    modules = {name: get_layer(model, name) for name in names}
    store: dict[str, torch.Tensor] = {}

    def make_hook(name: str) -> Callable[..., torch.Tensor]:
        def hook(_m: nn.Module, _inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> torch.Tensor:
            if not isinstance(out, torch.Tensor):
                raise TypeError(f"layer {name!r} returns {type(out).__name__}, not a tensor")
            store[name] = out.detach() if detach else out
            return out.clone()  # what follows may write in place: it gets the copy

        return hook

    with hooked((module, make_hook(name)) for name, module in modules.items()):
        yield store


@contextmanager
def recording(
    model: nn.Module,
    keep: Callable[[str, torch.Tensor], None],
    names: Iterable[str] | None = None,
) -> Iterator[None]:
    """Call ``keep(name, output)`` with every tensor output of the named modules (every
    named module without ``names``) during forward passes inside the block; outputs
    that are not tensors are skipped. The one recording hook of the package's searches
    over layers (head detection, default layers); :func:`capture` is for stored outputs.
    """
    wanted = None if names is None else set(names)

    def make_hook(name: str) -> Callable[..., None]:
        def hook(_m: nn.Module, _inp: tuple[torch.Tensor, ...], out: object) -> None:
            if isinstance(out, torch.Tensor):
                keep(name, out)

        return hook

    with hooked(
        (module, make_hook(name))
        for name, module in model.named_modules()
        if name and (wanted is None or name in wanted)
    ):
        yield


def score_gradient(
    logits: torch.Tensor, wrt: torch.Tensor, target: torch.Tensor, retain_graph: bool = False
) -> torch.Tensor:
    """``d logits[i, target[i]] / d wrt`` for every image ``i``, from one forward pass
    that kept its graph. Images are independent in evaluation mode, so one backward pass
    of the summed target logits gives every image's gradient. The one gradient helper
    of the map family."""
    score = logits.gather(1, target[:, None]).sum()
    (grad,) = torch.autograd.grad(score, wrt, retain_graph=retain_graph)
    return grad


@on_model_device
@torch.no_grad()
def activations(
    model: nn.Module, x: torch.Tensor, layers: str | Sequence[str]
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Run ``model`` on ``x`` in evaluation mode and return ``(logits, {layer: output})``.

    The model's mode is restored afterwards and no hook remains.
    """
    with eval_mode(model), capture(model, layers) as store:
        out = model(x)
    return out, dict(store)


@dataclass(frozen=True)
class LayerInfo:
    """One convolutional layer of a model, as :func:`list_layers` finds it."""

    name: str
    in_channels: int
    out_channels: int
    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    # output shape for the probe input; None: the layer does not run in evaluation mode
    # (the auxiliary classifiers of Inception v3 and GoogLeNet)
    output_shape: tuple[int, ...] | None


@on_model_device
def list_layers(model: nn.Module, x: torch.Tensor) -> list[LayerInfo]:
    """Every ``nn.Conv2d`` of ``model`` in registration order, with its output shape for
    ``x`` (one forward pass in evaluation mode; the API twin of ``convlens layers``).

    Args:
        model: the network.
        x: a probe input ``[N, C, H, W]`` (zeros of the model's input size will do).
    """
    names = conv_layer_names(model)
    _, acts = activations(model, x, names)
    modules = dict(model.named_modules())
    rows = []
    for name in names:
        conv = modules[name]
        assert isinstance(conv, nn.Conv2d)
        rows.append(
            LayerInfo(
                name,
                conv.in_channels,
                conv.out_channels,
                tuple(conv.kernel_size),
                tuple(conv.stride),
                tuple(acts[name].shape) if name in acts else None,
            )
        )
    return rows


def truncate(model: nn.Module, layer: str) -> nn.Module:
    """A module computing ``model``'s output at ``layer`` and nothing after it.

    Built with torchvision's FX feature extractor, so it works for any traceable
    model (ResNets, our CNNs), also when ``forward`` is not a plain sequence. The
    returned module shares its parameters with ``model``.
    """
    from torchvision.models.feature_extraction import create_feature_extractor  # slow import

    get_layer(model, layer)
    extractor = create_feature_extractor(model, return_nodes={layer: "out"})
    return _Unwrap(extractor)


class _Unwrap(nn.Module):
    def __init__(self, extractor: nn.Module) -> None:
        super().__init__()
        self.extractor = extractor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.extractor(x)["out"]


def remove_last_layers(model: nn.Module, n: int) -> nn.Sequential:
    """``nn.Sequential`` of ``model``'s top-level children without the last ``n``.

    This is the problem set's recipe (``resnet50`` without ``avgpool`` and ``fc``
    gives ``[1, 2048, 8, 8]`` at 256x256 input); it is only valid for models whose
    ``forward`` applies their children in order, such as torchvision ResNets. Use
    :func:`truncate` for anything else.
    """
    children = list(model.children())
    if not 0 < n < len(children):
        raise ValueError(
            f"n must be in 1..{len(children) - 1} for a model of "
            f"{len(children)} top-level layers, got {n}"
        )
    return nn.Sequential(*children[:-n])


def channels_last_twin(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with its weights in channels-last layout, for the many forward
    passes of Score-CAM and the faithfulness curves on the CPU: oneDNN then skips
    reordering weights on every batch (a quarter of the time of a small model; 1.4x on
    resnet50). Same function; the values differ from the model's by float rounding
    only. The model itself is untouched; one that cannot be copied is returned as is."""
    import copy

    try:
        twin = copy.deepcopy(model)
    except (TypeError, RuntimeError, copy.Error):
        return model
    return twin.to(memory_format=torch.channels_last)


def hook_count(model: nn.Module) -> int:
    """Forward (pre-)hooks still registered anywhere in ``model``; 0 after our helpers."""
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


@contextmanager
def relus_backward_as(
    model: nn.Module, function: type[torch.autograd.Function], on: list[bool] | None = None
) -> Iterator[None]:
    """Inside the block, every ``nn.ReLU`` module of ``model`` computes out of place and
    back-propagates as ``function`` (an autograd function of the ReLU's input) while
    ``on[0]`` is true (always, without ``on``): Lucid's redirected ReLU for feature
    visualisation, the guided ReLU of Guided Backprop. Functional ReLUs are left alone,
    as pytorch-grad-cam's Guided Backprop does."""
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    saved = [m.inplace for m in relus]
    switch = on if on is not None else [True]

    def hook(_m: nn.Module, inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> Any:
        if switch[0] and torch.is_grad_enabled():
            return function.apply(inp[0])
        return None

    try:
        for m in relus:
            m.inplace = False
        with hooked((m, hook) for m in relus):
            yield
    finally:
        for m, inplace in zip(relus, saved, strict=True):
            m.inplace = inplace


__all__ = [
    "LayerInfo",
    "activations",
    "capture",
    "channels_last_twin",
    "conv_layer_names",
    "eval_mode",
    "frozen",
    "get_layer",
    "hook_count",
    "hooked",
    "layer_names",
    "list_layers",
    "recording",
    "relus_backward_as",
    "remove_last_layers",
    "replaced",
    "score_gradient",
    "truncate",
]
