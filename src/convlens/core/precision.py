"""Reduced precision for the analyses: which one an analysis runs in, and autocast
around its forward and backward passes.

A precision is asked for once, for a block of work (:func:`precision`); each analysis
then opens :func:`reduced` around its passes with its own name (a map method's registry
name, ``faithfulness``, ``dissect``, ``fewest_units``, ``visualize``, ``units``,
``predict``). ``fp32`` is the default and changes nothing. ``bf16`` and ``fp16`` run
every analysis with autocast. ``auto`` runs in bf16 only the analyses whose answers were
measured to agree with fp32 (:data:`BF16_AGREES`, and the map methods marked ``bf16`` in
their registry rows, from ``benchmarks/precision_agreement.py``)
and only where bf16 has hardware behind it (a bf16-capable GPU, or a CPU with
AVX512-BF16 or AMX); everything else stays fp32.

The setting is process-wide, like :func:`torch.set_default_dtype`, so that an analysis
running in a worker thread (the explorer's) sees it too. Answers always come back in
fp32: autocast changes how the passes compute, never the dtype of what is returned.
"""

from __future__ import annotations

import contextlib
import functools
import platform
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import torch

F = TypeVar("F", bound=Callable[..., Any])
PRECISIONS = ("fp32", "bf16", "fp16", "auto")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}

# Analyses whose bf16 answers met the agreement goals against fp32, as measured by
# ``python benchmarks/precision_agreement.py`` (results in
# benchmarks/results/precision/agreement.json and, on a GPU, gpu/agreement_cuda.json;
# tests/core/test_precision.py checks that
# this set is the one that file's figures give). Not listed: fp32 under ``auto``.
BF16_AGREES: frozenset[str] = frozenset(
    # the map methods that agree are marked in their registry rows (``bf16=True``)
    {
        "faithfulness",
        # not fewest_units: on an H200, 2 of 16 sets found in bf16 failed the fp32 check
        # and were searched again (the goal allows 10%); every answer is checked anyway
        "visualize",
    }
)


class PrecisionError(ValueError):
    """A precision that is unknown, or that this device cannot run well."""


_policy: tuple[str, torch.device] | None = None  # set by precision(): (name, device type)


def cpu_has_fast_bf16() -> bool:
    """True when the CPU has native bf16 arithmetic (AVX512-BF16 or AMX)."""
    if platform.system() != "Linux":
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def native(name: str, device: torch.device) -> bool:
    """Whether ``device`` has hardware for precision ``name`` (fp32 always does)."""
    if name == "fp32":
        return True
    if device.type == "cuda":
        return name == "fp16" or torch.cuda.is_bf16_supported()
    if device.type == "mps":
        return name == "fp16"
    return name == "bf16" and cpu_has_fast_bf16()


def check_precision(name: str, device: torch.device | str, *, emulate: bool = False) -> None:
    """Refuse an unknown precision, or one ``device`` has no hardware for (unless
    ``emulate``: autocast then runs it in software, slower than fp32, which is only
    worth it to measure what the answers would be)."""
    device = torch.device(device)
    if name not in PRECISIONS:
        raise PrecisionError(f"unknown `precision` {name!r}; give {', '.join(PRECISIONS)}")
    if name in ("fp32", "auto") or emulate or native(name, device):
        return
    if device.type == "cpu" and name == "bf16":
        raise PrecisionError(
            "`precision` bf16 asked for, but this CPU has no bf16 units (AVX512-BF16 or "
            "AMX), so it would be emulated and slower than fp32; use fp32 or auto"
        )
    raise PrecisionError(
        f"`precision` {name} asked for, but {device.type} has no {name} hardware; use "
        + ("bf16 or " if device.type == "cpu" and cpu_has_fast_bf16() else "")
        + "fp32 or auto"
    )


def resolve(
    name: str,
    device: torch.device | str,
    analysis: str | None = None,
    agrees: bool | None = None,
) -> str:
    """The precision ``analysis`` runs in when ``name`` is asked for on ``device``:
    ``auto`` becomes bf16 where the analysis agrees with fp32 in bf16 (``agrees``, else
    :data:`BF16_AGREES` says) and the device has bf16 hardware, else fp32."""
    if name != "auto":
        return name
    device = torch.device(device)
    if agrees is None:
        agrees = analysis is not None and analysis in BF16_AGREES
    return "bf16" if agrees and native("bf16", device) else "fp32"


@contextlib.contextmanager
def precision(
    name: str = "fp32", device: torch.device | str = "cpu", *, emulate: bool = False
) -> Iterator[None]:
    """Run the analyses in this block in precision ``name`` (see the module's text) on
    ``device``'s kind. ``emulate`` lets bf16 or fp16 run where the device has no
    hardware for it (to measure agreement on any machine)."""
    global _policy
    check_precision(name, device, emulate=emulate)
    before, _policy = _policy, (name, torch.device(device))
    try:
        yield
    finally:
        _policy = before


def current(
    analysis: str | None = None, device: torch.device | None = None, agrees: bool | None = None
) -> str:
    """The precision ``analysis`` runs in now on ``device`` (default: the one
    :func:`precision` named); ``fp32`` outside :func:`precision`."""
    if _policy is None:
        return "fp32"
    return resolve(_policy[0], device or _policy[1], analysis, agrees)


def reduced(
    analysis: str, device: torch.device, agrees: bool | None = None
) -> contextlib.AbstractContextManager[object]:
    """Autocast for ``analysis``'s passes on ``device`` as the current setting says.
    Outside :func:`precision` nothing changes; inside it, an analysis that stays fp32
    turns off any autocast around it (an fp32 method called from a bf16 one)."""
    if _policy is None:
        return contextlib.nullcontext()
    name = current(analysis, device, agrees)
    if name == "fp32":
        return torch.autocast(device.type, enabled=False)
    return torch.autocast(device.type, dtype=DTYPES[name])


def in_precision(analysis: str) -> Callable[[F], F]:
    """Run ``fn(model, ...)`` under :func:`reduced` for ``analysis`` on the model's
    device."""

    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def inner(model: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
            device = next((p.device for p in model.parameters()), torch.device("cpu"))
            with reduced(analysis, device):
                return fn(model, *args, **kwargs)

        return inner  # type: ignore[return-value]

    return wrap


def autocast(name: str, device: torch.device) -> contextlib.AbstractContextManager[object]:
    """Autocast to ``name`` on ``device``, nothing for fp32: what a task that may run in
    another process (a Ray worker, where :func:`precision` was never set) opens for the
    precision its job resolved."""
    if name == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=DTYPES[name])


def full(device: torch.device) -> contextlib.AbstractContextManager[object]:
    """fp32 inside, whatever the setting (a check that must not be rounded)."""
    if _policy is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, enabled=False)


__all__ = [
    "BF16_AGREES",
    "DTYPES",
    "PRECISIONS",
    "PrecisionError",
    "autocast",
    "check_precision",
    "cpu_has_fast_bf16",
    "current",
    "full",
    "in_precision",
    "native",
    "precision",
    "reduced",
    "resolve",
]
