"""Where and how training runs: the device, bf16 autocast, glibc's allocator, and a
record of the machine for results."""

from __future__ import annotations

import contextlib
import ctypes
import platform
from pathlib import Path
from typing import Any

import torch


def resolve_device(name: str = "auto") -> torch.device:
    """``'auto'`` is CUDA when available, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available; use `device` cpu")
    return dev


def cpu_has_fast_bf16() -> bool:
    """True when the CPU has native bf16 arithmetic (AVX512-BF16 or AMX)."""
    if platform.system() != "Linux":
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


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
    "autocast",
    "autocast_dtype",
    "cpu_has_fast_bf16",
    "cpu_name",
    "keep_freed_memory",
    "machine_info",
    "resolve_device",
]
