"""Where and how models run: the device (and moving an analysis's inputs and answers
between devices), bf16 autocast, glibc's allocator, and a record of the machine for
results."""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import functools
import platform
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch

from convlens.core.precision import cpu_has_fast_bf16

DEVICES = "auto, cpu, cuda, cuda:N or mps"
T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


def resolve_device(name: str = "auto", mps: bool = True) -> torch.device:
    """The device called ``name``: ``auto`` is CUDA when present, then MPS (Apple's GPU;
    not when ``mps`` is False), then the CPU; ``cuda``, ``cuda:N`` and ``mps`` must be
    present (a ``ValueError`` that names `device` otherwise)."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if mps and _mps_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown `device` {name!r}; give {DEVICES}") from None
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"unknown `device` {name!r}; give {DEVICES}")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"`device` {name} asked for, but CUDA is not available here; use cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            n = torch.cuda.device_count()
            raise ValueError(
                f"`device` {name} asked for, but there are {n} CUDA devices (0..{n - 1})"
            )
    if dev.type == "mps" and not _mps_available():
        raise ValueError(f"`device` {name} asked for, but MPS is not available here; use cpu")
    return dev


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def model_device(model: torch.nn.Module) -> torch.device:
    """Where ``model``'s parameters are (the CPU for a model without any)."""
    return next((p.device for p in model.parameters()), torch.device("cpu"))


def to_device(value: T, device: torch.device) -> T:
    """``value`` with every tensor in it moved to ``device``: a tensor, or a frozen
    dataclass, tuple, list or dict holding tensors (other values are left as they are)."""
    if isinstance(value, torch.Tensor):
        return value.to(device)  # type: ignore[return-value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        changes = {
            f.name: to_device(getattr(value, f.name), device)
            for f in dataclasses.fields(value)
            if f.init
        }
        return dataclasses.replace(value, **changes)
    if isinstance(value, (tuple, list)):
        return type(value)(to_device(v, device) for v in value)
    if isinstance(value, dict):
        return {k: to_device(v, device) for k, v in value.items()}  # type: ignore[return-value]
    return value


def on_model_device(fn: F) -> F:
    """Run ``fn(model, ...)`` where the model's parameters are: its tensor arguments are
    moved there, and the tensors of its answer come back to the device of the first
    tensor argument as given (captum's convention). Nothing moves when they already
    agree."""

    @functools.wraps(fn)
    def inner(model: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        device = model_device(model)
        given = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
        home = given[0].device if given else device
        if all(t.device == device for t in given):
            return fn(model, *args, **kwargs)
        args = tuple(to_device(a, device) if isinstance(a, torch.Tensor) else a for a in args)
        kwargs = {
            k: to_device(v, device) if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()
        }
        return to_device(fn(model, *args, **kwargs), home)

    inner.on_model_device = True  # type: ignore[attr-defined]  # read by the tests
    return inner  # type: ignore[return-value]


def keep_freed_memory() -> bool:
    """Ask glibc's allocator to keep freed memory for reuse instead of returning it.

    By default glibc serves every allocation over a few MB (a batch of activations)
    with a fresh ``mmap`` and unmaps it when freed, so each training step pays page
    faults to get zeroed memory back from the kernel: about 4% of a CPU step here.
    With mmap off and trimming off, freed blocks are reused. The setting is
    process-wide and lasts until the process ends; the process keeps its peak memory.
    Returns whether it applied (glibc only).
    """
    if platform.system() != "Linux":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_max = -1, -4  # from glibc's malloc.h
        return bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, 1 << 30))
    except (OSError, AttributeError):
        return False


def pass_batch(values: int, device: torch.device, batch_size: int | None = None) -> int:
    """``batch_size``, or by default 256 images a pass, and on the CPU at most about half
    a million input values (``values`` per image: 10 images of 224 x 224 x 1, 3 of
    224 x 224 x 3). Larger passes leave the CPU's caches: 256 images of 224 px ran 1.6x
    slower than batches of 8, and fashion-cnn's 10,000 test images with flip TTA 1.5x
    slower in passes of 1,000 than of 256 (one thread of an AMD EPYC). Under a 16-bit
    autocast, whose activations take half the bytes, twice as many values: in bf16 the
    faithfulness table of 7 CAM methods on 10 resnet50 images at 224 px took 67.0-67.7 s
    in passes of 6 and 74.8-79.3 s in passes of 3 (three runs each, alternating;
    ``benchmarks/real_size.py``, 2 cores of an AMD EPYC with AVX512-BF16)."""
    if batch_size is not None:
        return batch_size
    if device.type != "cpu":
        return 256
    budget = 1 << 19
    if torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu").itemsize == 2:
        budget <<= 1
    return max(1, min(256, budget // max(1, values)))


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device``, or ``None`` for fp32."""
    if precision == "fp32":
        return None
    if device.type == "cuda":
        ok = torch.cuda.is_bf16_supported()
    else:
        ok = cpu_has_fast_bf16() or precision == "bf16"
    if precision == "bf16" and not ok:
        raise ValueError("precision 'bf16' requested but the device does not support it")
    return torch.bfloat16 if ok else None


def autocast(
    device: torch.device, dtype: torch.dtype | None
) -> contextlib.AbstractContextManager[Any]:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def machine_info() -> dict[str, Any]:
    return {
        "torch": str(torch.__version__),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "processor": cpu_name(),
        "threads": torch.get_num_threads(),
    }


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


__all__ = [
    "DEVICES",
    "autocast",
    "autocast_dtype",
    "cpu_name",
    "keep_freed_memory",
    "machine_info",
    "model_device",
    "on_model_device",
    "pass_batch",
    "resolve_device",
    "to_device",
]
