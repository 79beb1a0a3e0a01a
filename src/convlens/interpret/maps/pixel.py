"""Pixel attributions: which input pixels a class's score depends on.

The other half of saliency next to the CAM family (:mod:`convlens.interpret.maps.cam`),
computed at the input instead of a layer:

- **Saliency** (Simonyan et al., 2014): ``|d f_c / d x|``.
- **Input x Gradient** (Shrikumar et al., 2016): ``x * d f_c / d x``.
- **Integrated Gradients** (Sundararajan et al., 2017): ``(x - b) * integral_0^1 d f_c
  / d x (b + a (x - b)) da`` for a baseline ``b``, by a quadrature rule of ``steps``
  points (Gauss-Legendre or Riemann left/right/middle/trapezoid, captum's names); the
  attributions sum to ``f_c(x) - f_c(b)`` up to the rule's error (``delta``). The
  trapezoid rule's weights here sum to 1 (``1 / (steps - 1)``, halved at the ends);
  captum's use ``1 / steps``, so its trapezoid attributions are ``(steps - 1) / steps``
  of these.
- **SmoothGrad** (Smilkov et al., 2017): Saliency averaged over ``samples`` copies of
  the image with Gaussian noise (``stdev``).
- **Occlusion** (Zeiler and Fergus, 2014): ``f_c(x) - f_c(x with a window set to the
  baseline)`` spread over the window's pixels, averaged over the windows covering each
  pixel; windows slide by ``stride`` and the last may reach past the border.
- **Guided Backprop** (Springenberg et al., 2015): the gradient with every ``nn.ReLU``
  passing back only positive gradients where its input was positive.
- **Guided Grad-CAM** (Selvaraju et al., 2017): Guided Backprop times the Grad-CAM map
  of ``layer``, upsampled to the input and scaled to [0, 1] (pytorch-grad-cam's).

Each is a member of the map family: :meth:`PixelAttribution.attribute` is the one
method a member overrides (``[N, C, H, W]`` attributions for one class per image); the
family's ``__call__`` gives the same :class:`~convlens.interpret.maps.base.ClassMaps` as the
CAMs, whose map is the attributions summed over channels, so the same faithfulness
metrics score both. :func:`attribute` gives the raw attributions, equal to captum's
(and pytorch-grad-cam's for the guided methods). Gradient passes run ``batch_size``
images at a time: Integrated Gradients' steps and SmoothGrad's samples are batched.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from convlens.core.compat import moved
from convlens.core.device import model_device, on_model_device
from convlens.core.hooks import eval_mode, frozen, relus_backward_as, score_gradient
from convlens.core.precision import reduced
from convlens.core.tensors import BASELINES, baseline_image
from convlens.interpret.maps import registry
from convlens.interpret.maps.base import ActivationMapMethod, Site, normalize_maps
from convlens.interpret.maps.cam import GradCAM

# Integrated Gradients' quadrature rules, captum's names (declared in the registry)
RULES: tuple[str, ...] = registry.flags()["rule"].choices or ()


@dataclass(frozen=True)
class Attribution:
    """Pixel attributions of one class per image."""

    method: str
    attributions: torch.Tensor  # [N, C, H, W]
    classes: torch.Tensor  # [N] the class explained

    @property
    def target(self) -> torch.Tensor:
        """Deprecated: the old name of :attr:`classes` (goes in the next release)."""
        warnings.warn(
            "Attribution.target is now called Attribution.classes; the old name goes in the "
            "next release",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.classes

    logits: torch.Tensor | None  # [N, K] when the target was each image's top-1, else None
    delta: torch.Tensor | None = None  # [N] Integrated Gradients: sum - (f(x) - f(b))
    gap: torch.Tensor | None = None  # [N] Integrated Gradients: f(x) - f(b)
    steps: torch.Tensor | None = None  # [N] Integrated Gradients: steps used per image


def quadrature(rule: str, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(weights, alphas)`` of ``steps`` points on [0, 1] for ``rule`` (see :data:`RULES`),
    float64 on the CPU."""
    if steps < 1:
        raise ValueError(f"`steps` must be at least 1, got {steps}")
    if rule == "gausslegendre":
        nodes, w = np.polynomial.legendre.leggauss(steps)
        return torch.tensor(0.5 * w, device="cpu"), torch.tensor(0.5 * (nodes + 1), device="cpu")
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}; choose one of {', '.join(RULES)}")
    # the points as float32 linspaces, as captum makes them (a point that differs in its
    # last bit can cross a ReLU's kink in a deep network)
    if rule == "riemann_trapezoid":
        if steps < 2:
            raise ValueError("the trapezoid rule needs at least 2 steps")
        w = np.full(steps, 1 / (steps - 1))
        w[0] = w[-1] = 1 / (2 * (steps - 1))
        return torch.tensor(w, device="cpu"), torch.linspace(0, 1, steps, device="cpu").double()
    first, last = {
        "riemann_left": (0.0, 1 - 1 / steps),
        "riemann_right": (1 / steps, 1.0),
        "riemann_middle": (1 / (2 * steps), 1 - 1 / (2 * steps)),
    }[rule]
    alphas = torch.linspace(first, last, steps, device="cpu").double()
    return torch.full((steps,), 1 / steps, dtype=torch.float64, device="cpu"), alphas


def pass_size(n: int, batch_size: int) -> int:
    """The size of ``n`` items' passes of at most ``batch_size``, even: 1,600 at 512 are
    four of 400, not three of 512 and one of 64 (a small last pass runs at a worse rate
    per item, and so do very large ones on CPU)."""
    return -(-n // -(-n // batch_size)) if n else 1


def gradients(
    model: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor,
    batch_size: int,
    on_step: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """``d f_target[i] / d x[i]`` for every image, in even passes of at most
    ``batch_size`` images (:func:`pass_size`; ``on_step(passes done, passes)`` before
    each)."""
    out = []
    size = pass_size(x.shape[0], batch_size)
    passes = -(-x.shape[0] // size)
    for i, s in enumerate(range(0, x.shape[0], size)):
        if on_step is not None:
            on_step(i, passes)
        xb = x[s : s + size].detach().requires_grad_(True)
        with torch.enable_grad(), frozen(model):
            logits = model(xb).float()
            _check_classes(target, logits.shape[1])
            out.append(score_gradient(logits, xb, target[s : s + size]))
    return torch.cat(out)


def _check_classes(target: torch.Tensor, k: int) -> None:
    if int(target.max()) >= k:
        raise ValueError(f"`classes` must be class indices in 0..{k - 1}, got {int(target.max())}")


class _GuidedReLU(torch.autograd.Function):
    """ReLU whose gradient passes only where both its input and the gradient coming
    back are positive (Guided Backprop)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return x.clamp_min(0)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return grad * (x > 0) * (grad > 0)


class PixelAttribution(ActivationMapMethod):
    """Attributions at the input, one ``[N, C, H, W]`` tensor per class (see the module
    doc); a member overrides :meth:`attribute` only. Options are keyword arguments of
    the constructor; ``layer`` is read only by Guided Grad-CAM; ``on_step(done, total)``
    is called before each pass of the network (an exception it raises ends the work)."""

    def __init__(
        self,
        model: nn.Module,
        layer: str | None = None,
        on_step: Callable[[int, int], None] | None = None,
        **options: Any,
    ) -> None:
        super().__init__(model, layer)
        self.on_step = on_step
        registry.check_options(self.name, list(options))
        self.settings = {**registry.method(self.name).defaults(), **options}
        if "batch_size" in self.settings and self.settings["batch_size"] < 1:
            raise ValueError(f"`batch_size` must be at least 1, got {self.settings['batch_size']}")

    def locate(self, x: torch.Tensor) -> Site:
        return Site("input")

    def forward(self, x: torch.Tensor, layer: str) -> tuple[torch.Tensor, torch.Tensor]:
        with eval_mode(self.model), torch.no_grad():
            logits = self.model(x).float()
        return logits, x.detach().float()

    def weighted_maps(
        self,
        x: torch.Tensor,
        site: Site,
        features: torch.Tensor,
        logits: torch.Tensor,
        classes: torch.Tensor,
    ) -> torch.Tensor:
        """``[N, T, H, W]``: each class's attributions summed over the channels."""
        with eval_mode(self.model):
            maps = [self.attribute(x, classes[:, t]).sum(1) for t in range(classes.shape[1])]
        return torch.stack(maps, 1)

    def attribute(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``[N, C, H, W]`` attributions of class ``target[i]`` for each image ``x[i]``
        (the model is in evaluation mode)."""
        raise NotImplementedError


class Saliency(PixelAttribution):
    def attribute(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        grad = gradients(self.model, x, target, self.settings["batch_size"], self.on_step)
        return grad.abs() if self.settings["abs"] else grad


class InputXGradient(PixelAttribution):
    def attribute(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return x * gradients(self.model, x, target, self.settings["batch_size"], self.on_step)


def _baseline(x: torch.Tensor, baseline: str | float | torch.Tensor) -> torch.Tensor:
    """``baseline`` as a tensor of ``x``'s shape: a kind of :data:`BASELINES`, a number,
    or a tensor of shape ``[C, H, W]``, ``[1, C, H, W]`` or ``x``'s."""
    if isinstance(baseline, str):
        return baseline_image(x, baseline)
    if isinstance(baseline, int | float):
        return torch.full_like(x, float(baseline))
    b = baseline.to(x.device, x.dtype)
    if b.shape == x.shape[1:]:
        b = b[None]
    if b.shape[1:] != x.shape[1:] or b.shape[0] not in (1, x.shape[0]):
        raise ValueError(
            f"the baseline has shape {tuple(baseline.shape)}, the inputs {tuple(x.shape)}: "
            f"give one of shape {tuple(x.shape[1:])}, [1, ...] or the inputs' own, or one of "
            f"{', '.join(BASELINES)}"
        )
    return b.expand_as(x)


class IntegratedGradients(PixelAttribution):
    def attribute(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.integrate(x, target)[0]

    def integrate(
        self, x: torch.Tensor, target: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The attributions, and per image the completeness gap ``delta``, ``f(x) -
        f(b)`` and the steps used. An image whose ``|delta|`` is over ``tolerance`` of
        ``|f(x) - f(b)|`` is integrated again with twice the steps, up to ``max_steps``
        (a ReLU network's gradient jumps along the path, and a max-pooling one's more
        so: at captum's 50 points about half of fashion-cnn's test images miss 1%).
        ``tolerance`` None: ``steps`` for every image, as captum."""
        o = self.settings
        if o["steps"] < 1:
            raise ValueError(f"`steps` must be at least 1, got {o['steps']}")
        b = _baseline(x, o["baseline"])
        with torch.no_grad():
            ends = self.model(torch.cat([x, b])).float()
        _check_classes(target, ends.shape[1])
        t2 = torch.cat([target, target])[:, None]
        at_x, at_b = ends.gather(1, t2)[:, 0].chunk(2)
        gap = at_x - at_b
        out = torch.empty_like(x)
        used = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        todo, steps = torch.arange(x.shape[0], device=x.device), o["steps"]
        while True:
            out[todo] = self.path_integral(x[todo], b[todo], target[todo], steps)
            used[todo] = steps
            delta = out[todo].flatten(1).sum(1) - gap[todo]
            if o["tolerance"] is None or 2 * steps > o["max_steps"]:
                break
            missed = delta.abs() > o["tolerance"] * gap[todo].abs()
            if not missed.any():
                break
            todo, steps = todo[missed], 2 * steps
        return out, out.flatten(1).sum(1) - gap, gap, used

    def path_integral(
        self, x: torch.Tensor, b: torch.Tensor, target: torch.Tensor, steps: int
    ) -> torch.Tensor:
        """``(x - b) *`` the quadrature of the gradient along the straight path."""
        weights, alphas = quadrature(self.settings["rule"], steps)
        n = x.shape[0]
        # every point of every image's path in one stack, step-major as captum orders
        # them, run batch_size at a time
        a = alphas.to(x.device, x.dtype).view(steps, 1, 1, 1, 1)
        path = (b[None] + a * (x - b)[None]).reshape(steps * n, *x.shape[1:])
        grads = gradients(
            self.model, path, target.repeat(steps), self.settings["batch_size"], self.on_step
        )
        w = weights.to(x.device).float().view(steps, 1)
        total = (grads.reshape(steps, -1) * w).reshape(steps, *x.shape).sum(0)
        return total * (x - b)


class SmoothGrad(PixelAttribution):
    def attribute(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Saliency (absolute gradients) averaged over noisy copies; ``stdev`` None is
        0.15 of each image's value range (Smilkov et al.'s 10-20%)."""
        o = self.settings
        s = o["samples"]
        if s < 1:
            raise ValueError(f"`samples` must be at least 1, got {s}")
        n = x.shape[0]
        if o["stdev"] is None:
            flat = x.flatten(1)
            stdev = (0.15 * (flat.amax(1) - flat.amin(1))).view(n, 1, 1, 1)
        else:
            stdev = torch.tensor(float(o["stdev"]), device=x.device)
        g = torch.Generator().manual_seed(o["seed"])  # on the CPU: one answer on every device
        # image-major copies (each image's samples together), one draw for all
        noise = torch.randn((n * s, *x.shape[1:]), generator=g, device="cpu", dtype=x.dtype)
        noise = noise.to(x.device)
        noisy = x.repeat_interleave(s, 0) + noise * (
            stdev.repeat_interleave(s, 0) if stdev.ndim else stdev
        )
        grads = gradients(
            self.model, noisy, target.repeat_interleave(s), o["batch_size"], self.on_step
        )
        return grads.abs().reshape(n, s, *x.shape[1:]).sum(1) / s


class Occlusion(PixelAttribution):
    def windows(self, h: int, w: int) -> tuple[int, int]:
        """The window side and stride for an ``h x w`` input (defaults: a seventh of the
        shorter side, and half of that)."""
        k = self.settings["window"] or max(1, min(h, w) // 7)
        stride = self.settings["stride"] or max(1, k // 2)
        if k > min(h, w):
            raise ValueError(f"the occlusion window ({k} px) is larger than the image ({h}x{w})")
        if not 1 <= stride <= k:
            raise ValueError(f"the occlusion stride must be in 1..{k} (the window), got {stride}")
        return k, stride

    @torch.no_grad()
    def attribute(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        k, stride = self.windows(h, w)
        b = _baseline(x, self.settings["baseline"])
        # window origins as captum places them: ceil((side - k) / stride) + 1 per side,
        # the last window cut off at the border
        ys = [i * stride for i in range(-(-(h - k) // stride) + 1)]
        xs = [j * stride for j in range(-(-(w - k) // stride) + 1)]
        masks = torch.zeros(len(ys) * len(xs), 1, h, w, device=x.device)
        for m, (y0, x0) in enumerate((y, x_) for y in ys for x_ in xs):
            masks[m, :, y0 : y0 + k, x0 : x0 + k] = 1
        logits = self.model(x).float()
        _check_classes(target, logits.shape[1])
        before = logits.gather(1, target[:, None])  # [N, 1]
        total = torch.zeros_like(x, dtype=torch.float32)
        step = pass_size(len(masks), self.settings["batch_size"])
        chunks = -(-len(masks) // step)
        for i in range(n):
            for s in range(0, len(masks), step):
                if self.on_step is not None:
                    self.on_step(i * chunks + s // step, n * chunks)
                mk = masks[s : s + step]
                occluded = x[i] * (1 - mk) + b[i] * mk
                after = self.model(occluded).float()[:, target[i]]
                total[i] += ((before[i] - after).view(-1, 1, 1, 1) * mk).sum(0)
        return total / masks.sum(0)


def _warn_unguided(model: nn.Module, method: str) -> None:
    """Warn when ``model`` has no ``nn.ReLU`` module to guide: its ReLUs (if any) are
    functional, and the guided methods reduce to the plain gradient."""
    if not any(isinstance(m, nn.ReLU) for m in model.modules()):
        warnings.warn(
            f"{method}: {type(model).__name__} has no nn.ReLU module (functional ReLUs, or "
            "none), so the guided gradient is the plain gradient; write its ReLUs as "
            "nn.ReLU modules to guide them",
            stacklevel=3,
        )


class GuidedBackprop(PixelAttribution):
    def attribute(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _warn_unguided(self.model, type(self).__name__)
        with relus_backward_as(self.model, _GuidedReLU):
            return gradients(self.model, x, target, self.settings["batch_size"], self.on_step)


class GuidedGradCAM(PixelAttribution):
    def attribute(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _warn_unguided(self.model, type(self).__name__)
        with relus_backward_as(self.model, _GuidedReLU):
            guided = gradients(self.model, x, target, self.settings["batch_size"], self.on_step)
        maps = GradCAM(self.model, self.layer)(x, classes=target[:, None])
        # scaled to [0, 1] again after upsampling, as pytorch-grad-cam's map is
        return guided * normalize_maps(maps.upsampled[:, :1])


@on_model_device
def attribute(
    model: nn.Module,
    x: torch.Tensor,
    method: str = registry.DEFAULT_ATTRIBUTION,
    classes: torch.Tensor | int | None = None,
    layer: str | None = None,
    **options: Any,
) -> Attribution:
    """Pixel attributions of ``x`` (``[N, C, H, W]``) for ``classes`` (``[N]``, one
    index for all, or None: each image's top-1) with ``method`` (a key of
    ``registry.names(registry.PIXEL)``; its options as keyword arguments, e.g. ``steps=50``).
    ``target``, the old name of ``classes``, still works for one release.

    Raises:
        ValueError: unknown method or option, bad shapes or class, ``steps`` < 1, a
            baseline of the wrong shape, an occlusion window larger than the image.
    """
    if method not in registry.names(registry.PIXEL):
        known = ", ".join(registry.names(registry.PIXEL))
        raise ValueError(f"unknown method {method!r}; choose one of {known}")
    if x.ndim != 4:
        raise ValueError(f"inputs must be [N, C, H, W], got shape {tuple(x.shape)}")
    if "target" in options:
        moved(options, "target", "classes", "attribute")
        classes = options.pop("classes")
    m = registry.make(method, model, layer, **options)
    assert isinstance(m, PixelAttribution)  # a pixel method, checked above
    agrees = registry.method(method).bf16
    with eval_mode(model), reduced(method, model_device(model), agrees):
        # the logits only when the top-1 class is asked for: a given class costs no
        # extra pass (one image tells the number of classes)
        logits = None
        if classes is None:
            with torch.no_grad():
                logits = model(x).float()
            t = logits.argmax(1)
        else:
            t = (
                torch.full((x.shape[0],), classes, dtype=torch.long, device=x.device)
                if isinstance(classes, int)
                else classes
            )
            # the upper bound is checked where the logits are first seen (no extra pass)
            if t.shape != (x.shape[0],) or int(t.min()) < 0:
                raise ValueError("`classes` must be [N] class indices, one per image")
        if isinstance(m, IntegratedGradients):
            attributions, delta, gap, used = m.integrate(x, t)
            return Attribution(method, attributions, t, logits, delta, gap, used)
        return Attribution(method, m.attribute(x, t), t, logits)


__all__ = [
    "RULES",
    "Attribution",
    "PixelAttribution",
    "attribute",
    "quadrature",
]
