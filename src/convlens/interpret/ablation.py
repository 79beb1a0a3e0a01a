"""Unit ablation (Problem 2 c-d): zero units of a layer, compare predictions, and find
the fewest units whose removal changes the top-1 class.

Two ways to remove unit ``k`` of a layer:

- ``activation`` (default): a forward hook sets channel ``k`` of the layer's output
  to zero. Everything downstream sees a zero map.
- ``weights``: the kernel (and bias) of output channel ``k`` of a convolution is
  zeroed for the duration of the block. The convolution then outputs exactly zero
  in channel ``k`` (so this equals activation ablation *at the convolution*), but a
  following BatchNorm turns that zero into ``beta - gamma * mean / sqrt(var + eps)``
  and a ReLU may pass it on, and in a residual block the skip connection adds the
  block's input back, so the block's output channel ``k`` is generally not zero.
  When ``layer`` names a block rather than a convolution, its last ``nn.Conv2d``
  with the right number of channels is the one modified.

The model is never left modified: hooks are removed and weights restored in
``finally``, also when the body raises.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from convlens.core.device import model_device, on_model_device
from convlens.core.hooks import activations, capture, eval_mode, frozen, get_layer, hooked
from convlens.core.precision import current, full, in_precision
from convlens.core.progress import progress_bar
from convlens.core.settings import settle
from convlens.interpret.heads import GapHead, NotGapHeadError, find_gap_head
from convlens.interpret.units import check_units

MODES = ("activation", "weights")
ORDERS = ("optimal", "contribution", "weight", "greedy")


def conv_for(model: nn.Module, layer: str) -> str:
    """The convolution whose kernels ``weights`` ablation zeroes for ``layer``: the layer
    itself if it is an ``nn.Conv2d``, else the last ``nn.Conv2d`` inside it."""
    module = get_layer(model, layer)
    if isinstance(module, nn.Conv2d):
        return layer
    convs = [n for n, m in module.named_modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError(
            f"layer {layer!r} ({type(module).__name__}) contains no convolution, so its "
            "units have no kernels to zero; ablate their activations (`mode` activation)"
        )
    return f"{layer}.{convs[-1]}"


@contextmanager
def masked_channels(model: nn.Module, layer: str, keep: torch.Tensor) -> Iterator[None]:
    """Zero the channels of ``layer``'s output where ``keep`` is ``False``.

    ``keep`` is boolean ``[C]`` (same for every image) or ``[N, C]`` (one pattern per
    image of the batch, for batched searches).
    """
    module = get_layer(model, layer)

    def hook(_m: nn.Module, _inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> torch.Tensor:
        if not isinstance(out, torch.Tensor) or out.ndim < 2:
            raise ValueError(f"layer {layer!r} does not output [N, C, ...] units")
        if out.shape[1] != keep.shape[-1]:
            raise ValueError(f"layer {layer!r} has {out.shape[1]} units, the mask {keep.shape[-1]}")
        k = keep.to(out.device).reshape(-1 if keep.ndim == 2 else 1, out.shape[1])
        k = k.reshape(*k.shape, *([1] * (out.ndim - 2)))
        return torch.where(k, out, torch.zeros((), dtype=out.dtype, device=out.device))

    with hooked([(module, hook)]):
        yield


@contextmanager
def ablated(
    model: nn.Module, layer: str, units: Sequence[int], mode: str = "activation"
) -> Iterator[str]:
    """Inside the block, ``units`` of ``layer`` are removed; yields the name of the
    module actually changed (``layer`` itself, or its convolution in ``weights`` mode).

    Raises:
        ValueError: unknown mode, layer or unit.
    """
    if mode not in MODES:
        raise ValueError(f"unknown ablation mode {mode!r}; choose activation or weights")
    if mode == "activation":
        units = [int(u) for u in units]

        def hook(_m: nn.Module, _inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> torch.Tensor:
            if not isinstance(out, torch.Tensor) or out.ndim < 2:
                raise ValueError(f"layer {layer!r} does not output [N, C, ...] units")
            check_units(units, out.shape[1], layer)
            out = out.clone()
            out[:, units] = 0
            return out

        with hooked([(get_layer(model, layer), hook)]):
            yield layer
        return

    name = conv_for(model, layer)
    conv = get_layer(model, name)
    assert isinstance(conv, nn.Conv2d)
    idx = torch.tensor(check_units(units, conv.out_channels, name))
    saved_w = conv.weight.detach()[idx].clone()
    saved_b = conv.bias.detach()[idx].clone() if conv.bias is not None else None
    try:
        with torch.no_grad():
            conv.weight[idx] = 0
            if conv.bias is not None:
                conv.bias[idx] = 0
        yield name
    finally:
        with torch.no_grad():
            conv.weight[idx] = saved_w
            if conv.bias is not None and saved_b is not None:
                conv.bias[idx] = saved_b


@dataclass(frozen=True)
class Ablation:
    """Predictions before and after removing units, and the removed units' maps."""

    layer: str
    modified: str  # module actually changed (the conv in weights mode)
    mode: str
    units: tuple[int, ...]
    logits_before: torch.Tensor  # [N, K]
    logits_after: torch.Tensor  # [N, K]
    maps: torch.Tensor  # [N, U, h, w] the ablated units' maps before ablation

    @property
    def probs_before(self) -> torch.Tensor:
        return self.logits_before.softmax(1)

    @property
    def probs_after(self) -> torch.Tensor:
        return self.logits_after.softmax(1)


@on_model_device
@in_precision("ablate")
@torch.no_grad()
def ablate(
    model: nn.Module,
    x: torch.Tensor,
    layer: str,
    units: Sequence[int],
    mode: str = "activation",
) -> Ablation:
    """Run ``x`` through ``model`` as is and with ``units`` of ``layer`` removed.

    Returns:
        The logits of both passes and the feature maps of the removed units (from the
        unmodified pass).
    """
    if x.ndim != 4:
        raise ValueError(f"inputs must be [N, C, H, W], got shape {tuple(x.shape)}")
    with eval_mode(model):
        with capture(model, layer) as store:
            before = model(x).float()
        maps = store[layer]
        if maps.ndim != 4:
            raise ValueError(
                f"layer {layer!r} outputs shape {tuple(maps.shape)}, not [N, C, h, w] units"
            )
        units = check_units(units, maps.shape[1], layer)
        with ablated(model, layer, units, mode) as modified:
            after = model(x).float()
    return Ablation(layer, modified, mode, tuple(units), before, after, maps[:, units].float())


def units_by_fc_weight(head: GapHead, class_index: int, top: int) -> list[int]:
    """The ``top`` units of the head's feature layer with the largest weight into
    class ``class_index`` of the linear layer (``W[c, :]``, largest first)."""
    channels = head.weight.shape[1]
    if not 1 <= top <= channels:
        raise ValueError(f"`top` must be in 1..{channels}, got {top}")
    return head.weight[class_index].topk(top).indices.tolist()


@dataclass(frozen=True)
class WeightedUnits:
    """The units that weigh most in one image's predicted class."""

    layer: str  # the layer feeding global average pooling
    class_index: int  # the image's top-1 class
    units: list[int]  # largest FC weight W[class_index, k] first


@on_model_device
@in_precision("ablate")
def top_weighted_units(
    model: nn.Module, x: torch.Tensor, top: int, layer: str | None = None
) -> WeightedUnits:
    """The ``top`` units with the largest FC weight for the top-1 class of ``x`` (one
    image), on the layer whose global average feeds the linear head.

    Raises:
        NotGapHeadError: the model has no GAP + linear head.
        ValueError: ``layer`` is given and has another number of units than the linear
            layer has inputs (the weights rank only the head's own feature layer).
    """
    if x.ndim != 4 or x.shape[0] != 1:
        raise ValueError(f"x must be one image [1, C, H, W], got shape {tuple(x.shape)}")
    try:
        head = find_gap_head(model, x)
    except NotGapHeadError as e:
        raise NotGapHeadError(
            f"units are ranked by their weight in a GAP + linear head, and here {e.reason}",
            "choose the units yourself (`units`), or search for the fewest that flip the "
            "top-1 (`min_units`) on a layer you name (`layer`)",
        ) from e
    layer = layer or head.layer
    logits, acts = activations(model, x, layer)
    channels = acts[layer].shape[1]
    if channels != head.weight.shape[1]:
        raise ValueError(
            f"units are ranked by their weight in {head.fc!r}, which has "
            f"{head.weight.shape[1]} inputs, but {layer!r} has {channels} units; rank the "
            f"units of {head.layer!r} (`layer`) or choose `units` yourself"
        )
    c = int(logits.argmax(1)[0])
    return WeightedUnits(layer, c, units_by_fc_weight(head, c, top))


@dataclass(frozen=True)
class FewestUnits:
    """The smallest set of units found whose removal changes the top-1 class."""

    layer: str
    mode: str
    order: str  # optimal, contribution, weight or greedy
    method: str  # "closed form" or "forward search"
    found: bool
    units: tuple[int, ...]  # in the order they were removed
    original_class: int
    new_class: int  # top-1 after removing ``units`` (real forward pass)
    logits_before: torch.Tensor  # [K]
    logits_after: torch.Tensor  # [K] real forward pass with ``units`` removed
    predicted_logits: torch.Tensor | None  # [K] closed form, when it applies
    forward_passes: int  # images run through the model by the search
    # why a greedy search stopped short of a flip: "budget" (out of time: ``units`` is
    # the best set so far), "max_units", or None (it flipped, or the closed form ran)
    stopped: str | None = None
    seconds: float = 0.0  # time the search took
    # the precision of the search: "bf16" only when its set also flips the class in fp32
    # (``logits_*`` are then fp32's); else the search ran again in fp32
    precision: str = "fp32"


def _margins(logits: torch.Tensor, c: int) -> torch.Tensor:
    """``logit_c - max_{d != c} logit_d`` per row; negative once another class wins."""
    others = logits.clone()
    others[:, c] = float("-inf")
    return logits[:, c] - others.amax(1)


def _changed(logits: torch.Tensor, c: int) -> torch.Tensor:
    return logits.argmax(1) != c


@dataclass(frozen=True)
class SearchSettings:
    """How :func:`fewest_units` searches.

    For the layer whose global average feeds the final linear layer (the default
    ``layer``) and ``activation`` mode, removing unit ``k`` changes every logit by
    exactly ``-W[:, k] * mean(A_k)``, so the search is closed form:

    - ``optimal`` (default there): for each rival class ``d`` the gains
      ``(W[c, k] - W[d, k]) * mean(A_k)`` sorted in decreasing order give the fewest
      units that lift ``d`` over ``c``; the minimum over ``d`` is the exact optimum
      over all subsets.
    - ``contribution``: remove units in decreasing order of ``W[c, k] * mean(A_k)``.
    - ``weight``: remove units in decreasing order of ``W[c, k]``.

    The answer is confirmed with one real forward pass. For any other layer or for
    ``weights`` mode the search is ``greedy``: each step tries removing each candidate
    unit (one real forward pass each, batched) and removes the one that most shrinks
    the margin of the original class, for at most ``max_units`` steps. The candidates
    of a step are the ``shortlist`` remaining units whose removal a first-order estimate
    (gradient of the margin times the unit's activation, one backward pass) says shrinks
    the margin most; every remaining unit when ``shortlist`` is None or the layer has
    no more units than that. The passes run only the part of the network after the
    layer when its forward allows (one image up to the layer, then a batch of masked
    copies); otherwise the whole network.

    Attributes:
        order: ``optimal``, ``contribution``, ``weight`` (closed form) or ``greedy``
            (``None``: the best the layer and mode allow).
        mode: remove a unit's ``activation`` or its ``weights``.
        max_units: the most units a greedy search removes.
        batch_size: masked copies per forward pass of a greedy step.
        budget: seconds the greedy search may take (``None``: no limit). When they run
            out the answer is the best set so far (``stopped="budget"``, ``found``
            False unless it already flips the class); the default keeps a search on a
            real-size layer (resnet50 ``layer3``) within 30 s.
        shortlist: candidates tried per greedy step (``None``: every remaining unit).
    """

    order: str | None = None
    mode: str = "activation"
    max_units: int = 32
    batch_size: int = 64
    budget: float | None = 30.0
    shortlist: int | None = 64

    def check(self) -> None:
        """Raise ``ValueError`` naming the first setting out of range."""
        if self.budget is not None and self.budget <= 0:
            raise ValueError(f"`budget` must be a positive number of seconds, got {self.budget}")
        if self.shortlist is not None and self.shortlist < 1:
            raise ValueError(f"`shortlist` must be at least 1, got {self.shortlist}")
        if self.batch_size < 1:
            raise ValueError(f"`batch_size` must be at least 1, got {self.batch_size}")


@on_model_device
@in_precision("fewest_units")
def fewest_units(
    model: nn.Module,
    x: torch.Tensor,
    layer: str | None = None,
    settings: SearchSettings | None = None,
    *,
    progress: bool = False,
    on_step: Callable[[int, int], None] | None = None,
    **overrides: Any,
) -> FewestUnits:
    """The fewest units of ``layer`` whose removal changes the top-1 class of image ``x``
    (in closed form where it can, else by a greedy search: see :class:`SearchSettings`).

    Args:
        x: one image ``[1, C, H, W]``.
        settings: order, mode and the greedy search's limits (:class:`SearchSettings`;
            or its fields as keywords, ``budget=10``).
        on_step: called as ``on_step(done, most)`` before each greedy step and once at
            the end; an exception it raises (a cancelled request) ends the search.
    """
    s = settle(SearchSettings, settings, overrides)
    device = model_device(model)
    answer = _fewest_units(model, x, layer, s, progress, on_step)
    if current("fewest_units", device) == "fp32":
        return answer
    # a set found in reduced precision counts only if it flips the prediction in fp32;
    # else (or when none was found) the search runs again in fp32
    if answer.found:
        with full(device), eval_mode(model), torch.no_grad():
            before = model(x).float()[0]
            with ablated(model, answer.layer, answer.units, s.mode):
                after = model(x).float()[0]
        c, new = int(before.argmax()), int(after.argmax())
    if answer.found and c == answer.original_class and new != c:
        return replace(
            answer,
            new_class=new,
            logits_before=before,
            logits_after=after,
            forward_passes=answer.forward_passes + 2,
            precision=current("fewest_units", device),
        )
    with full(device):
        return _fewest_units(model, x, layer, s, progress, on_step)


def _fewest_units(
    model: nn.Module,
    x: torch.Tensor,
    layer: str | None,
    s: SearchSettings,
    progress: bool,
    on_step: Callable[[int, int], None] | None,
) -> FewestUnits:
    start = time.perf_counter()
    layer, head, order = _search_plan(model, x, layer, s.order, s.mode)
    stopped = None
    with eval_mode(model), torch.no_grad():
        with capture(model, layer) as store:
            logits = model(x).float()
        c = int(logits.argmax(1))
        predicted = None
        if order == "greedy":
            search = _Greedy(model, x, layer, s.mode, c, s.batch_size, s.shortlist)
            units, stopped = search.run(s.max_units, start, s.budget, progress, on_step)
            passes = search.passes
        else:
            assert head is not None
            units, predicted = _closed_form(head, store[layer].float(), logits[0], c, order)
            passes = 0
        if units:
            with ablated(model, layer, units, s.mode):
                after = model(x).float()[0]
            passes += 1
        else:
            after = logits[0]
    new = int(after.argmax())
    return FewestUnits(
        layer=layer,
        mode=s.mode,
        order=order,
        method="closed form" if order != "greedy" else "forward search",
        found=new != c,
        units=tuple(units),
        original_class=c,
        new_class=new,
        logits_before=logits[0],
        logits_after=after,
        predicted_logits=predicted,
        forward_passes=passes,
        stopped=None if new != c else stopped,
        seconds=time.perf_counter() - start,
    )


def _search_plan(
    model: nn.Module, x: torch.Tensor, layer: str | None, order: str | None, mode: str
) -> tuple[str, GapHead | None, str]:
    """Check the arguments of :func:`fewest_units`; return the layer, the GAP head when
    the closed form applies to it, and the search order."""
    if x.ndim != 4 or x.shape[0] != 1:
        raise ValueError(f"fewest_units takes one image [1, C, H, W], got {tuple(x.shape)}")
    if mode not in MODES:
        raise ValueError(f"unknown ablation mode {mode!r}; choose activation or weights")
    if order is not None and order not in ORDERS:
        raise ValueError(f"unknown order {order!r}; choose one of {', '.join(ORDERS)}")
    head: GapHead | None
    try:
        head = find_gap_head(model, x, layer)
    except NotGapHeadError as e:
        if layer is None:
            raise NotGapHeadError(
                f"without a layer the search reads the layer feeding a GAP + linear head, "
                f"and here {e.reason}",
                "name a layer (`layer`) for the greedy search",
            ) from e
        head = None
    layer = layer if layer is not None else head.layer  # type: ignore[union-attr]
    closed_form = head is not None and mode == "activation"
    if order is None:
        order = "optimal" if closed_form else "greedy"
    if order != "greedy" and not closed_form:
        why = "weights mode" if head is not None else f"layer {layer!r}"
        raise ValueError(
            f"order {order!r} uses the linear head, which is exact only for activation "
            f"ablation of the layer feeding global average pooling, not for {why}; "
            "use the greedy search (`order` greedy)"
        )
    return layer, head, order


def _closed_form(
    head: GapHead, feats: torch.Tensor, logits: torch.Tensor, c: int, order: str
) -> tuple[list[int], torch.Tensor | None]:
    """Units to remove and the logits predicted after removing them."""
    w = head.weight.to(feats.device)  # [K, C]
    a = feats[0].mean((1, 2))  # [C] what global average pooling passes on
    effect = w * a  # [K, C]: removing unit k lowers logit d by effect[d, k]
    if order == "optimal":
        best: list[int] | None = None
        for d in range(w.shape[0]):
            if d == c:
                continue
            gain = effect[c] - effect[d]  # how much removing k closes the gap to d
            ranked = gain.argsort(descending=True, stable=True)
            total = gain[ranked].cumsum(0)
            hits = (total > logits[c] - logits[d]).nonzero()
            if len(hits):
                m = int(hits[0]) + 1
                if best is None or m < len(best):
                    best = ranked[:m].tolist()
        ranked_units = best or []
    else:
        score = effect[c] if order == "contribution" else w[c]
        ranked = score.argsort(descending=True, stable=True)
        after_each = logits[None, :] - effect[:, ranked].cumsum(1).T  # [C, K]
        hits = _changed(after_each, c).nonzero()
        ranked_units = ranked[: int(hits[0]) + 1].tolist() if len(hits) else []
    if not ranked_units:
        return [], None
    predicted = logits - effect[:, ranked_units].sum(1)
    return ranked_units, predicted


class _Greedy:
    """The greedy forward search of :func:`fewest_units` on one image."""

    def __init__(
        self,
        model: nn.Module,
        x: torch.Tensor,
        layer: str,
        mode: str,
        c: int,
        batch_size: int,
        shortlist: int | None,
    ) -> None:
        # Zeroing the kernel and bias of output channel k makes the convolution output
        # exactly zero there, so in weights mode masking the convolution's output is the
        # same function, and it lets every image of a batch remove a different unit.
        self.target = conv_for(model, layer) if mode == "weights" else layer
        self.model, self.x, self.c = model, x, c
        self.batch_size, self.shortlist = batch_size, shortlist
        self.passes = 0
        self.shared_prefix = True  # run the layer's input once, until that fails

    def run(
        self,
        max_units: int,
        start: float,
        budget: float | None,
        progress: bool,
        on_step: Callable[[int, int], None] | None = None,
    ) -> tuple[list[int], str | None]:
        """The removed units, in order, and why the search stopped (None: it flipped)."""
        with capture(self.model, self.target) as store:
            self.model(self.x)
        channels = store[self.target].shape[1]
        keep = torch.ones(channels, dtype=torch.bool, device=store[self.target].device)
        removed: list[int] = []
        steps = progress_bar(
            range(min(max_units, channels)), desc="fewest units", unit="step",
            disable=not progress,
        )  # fmt: skip
        stopped: str | None = "max_units"
        # The budget is kept ahead of time: work starts only when the time left allows
        # a pass as long as the longest so far, and one more for the confirming pass.
        longest = 0.0

        def out_of_time() -> bool:
            return budget is not None and time.perf_counter() - start + 2 * longest > budget

        try:
            for step in steps:
                if on_step is not None:
                    on_step(step, len(steps))
                if out_of_time():
                    stopped = "budget"
                    break
                candidates = self.candidates(keep)
                margins = torch.empty(len(candidates), device=keep.device)
                changed = torch.zeros(len(candidates), dtype=torch.bool, device=keep.device)
                for s in range(0, len(candidates), self.batch_size):
                    chunk = candidates[s : s + self.batch_size]
                    masks = keep.expand(len(chunk), channels).clone()
                    masks[torch.arange(len(chunk), device=keep.device), chunk] = False
                    t = time.perf_counter()
                    out = self.masked_logits(masks)
                    longest = max(longest, time.perf_counter() - t)
                    margins[s : s + len(chunk)] = _margins(out, self.c)
                    changed[s : s + len(chunk)] = _changed(out, self.c)
                    if s + len(chunk) < len(candidates) and out_of_time():
                        margins, changed = margins[: s + len(chunk)], changed[: s + len(chunk)]
                        candidates = candidates[: s + len(chunk)]
                        break
                # Prefer a unit that flips the class now; among the rest, the smallest margin.
                if changed.any():
                    flipping = changed.nonzero().flatten()
                    pick = int(flipping[margins[flipping].argmin()])
                else:
                    pick = int(margins.argmin())
                unit = int(candidates[pick])
                removed.append(unit)
                keep[unit] = False
                steps.set_postfix(units=len(removed), margin=f"{float(margins[pick]):.3f}")
                if changed[pick]:
                    stopped = None
                    break
        finally:
            steps.close()
        return removed, stopped

    def candidates(self, keep: torch.Tensor) -> torch.Tensor:
        """The remaining units to try this step (see ``shortlist``)."""
        remaining = keep.nonzero().flatten()
        if self.shortlist is None or len(remaining) <= self.shortlist:
            return remaining
        # first order: removing unit k changes the margin by about -sum(g_k * A_k)
        with (
            torch.enable_grad(),
            frozen(self.model),
            capture(self.model, self.target, detach=False) as store,
        ):
            with masked_channels(self.model, self.target, keep):
                x = self.x.detach().clone().requires_grad_(True)
                out = self.model(x).float()
            margin = _margins(out, self.c).sum()
            acts = store[self.target]
            (grad,) = torch.autograd.grad(margin, acts)
        drop = -(grad * acts.detach()).flatten(2).sum(2)[0]  # [C]: estimated change
        self.passes += 1
        order = drop[remaining].argsort(stable=True)  # most negative first
        return remaining[order[: self.shortlist]]

    def masked_logits(self, masks: torch.Tensor) -> torch.Tensor:
        """Logits of the image with each row of ``masks`` ``[B, C]`` applied to the layer."""
        b = masks.shape[0]
        if self.shared_prefix:
            try:
                with _expanding(self.model, self.target, masks):
                    out = self.model(self.x).float()
                if out.shape[0] == b:
                    self.passes += b
                    return out
            except RuntimeError:  # a concatenation with a tensor from before the layer
                pass
            self.shared_prefix = False
        with masked_channels(self.model, self.target, masks):
            out = self.model(self.x.expand(b, *self.x.shape[1:])).float()
        self.passes += b
        return out


@contextmanager
def _expanding(model: nn.Module, layer: str, masks: torch.Tensor) -> Iterator[None]:
    """Turn ``layer``'s output for one image into ``B`` copies, each with one row of
    ``masks`` ``[B, C]`` applied: the network before the layer runs once. What follows
    sees a batch of ``B``; a tensor from before the layer (a skip connection) has
    batch 1 and broadcasts, which gives the same values as ``B`` identical copies."""
    module = get_layer(model, layer)
    k = masks[:, :, None, None]

    def hook(_m: nn.Module, _inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> torch.Tensor:
        if not isinstance(out, torch.Tensor) or out.ndim != 4 or out.shape[0] != 1:
            raise RuntimeError("not one image of [1, C, h, w] maps")
        return torch.where(k.to(out.device), out, torch.zeros((), dtype=out.dtype))

    with hooked([(module, hook)]):
        yield


__all__ = [
    "MODES",
    "ORDERS",
    "Ablation",
    "FewestUnits",
    "SearchSettings",
    "WeightedUnits",
    "ablate",
    "ablated",
    "conv_for",
    "fewest_units",
    "masked_channels",
    "top_weighted_units",
    "units_by_fc_weight",
]
