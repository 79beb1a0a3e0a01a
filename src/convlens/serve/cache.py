"""What the explorer keeps in memory (answers: maps, PNGs, logits; uploaded images),
within a budget of bytes and, where given, of entries; the least recently used go
first."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

import torch


def nbytes(value: Any) -> int:
    """About how much memory a cached answer holds."""
    if isinstance(value, bytes | str):
        return len(value) + 64
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size() + 128
    if hasattr(value, "__dataclass_fields__"):
        return sum(nbytes(getattr(value, f)) for f in value.__dataclass_fields__) + 256
    if isinstance(value, dict):
        return sum(nbytes(v) for v in value.values()) + 64 * len(value)
    if isinstance(value, list | tuple):
        return sum(nbytes(v) for v in value) + 16 * len(value)
    return 64


class AnswerCache:
    """Values by key, bounded in bytes (see :func:`nbytes`) and, with ``max_count``, in
    entries; safe from many threads. ``items``: ``{key: (value, bytes)}``, least
    recently used first."""

    def __init__(self, budget: int, max_count: int | None = None) -> None:
        self.budget, self.max_count = budget, max_count
        self.bytes = 0
        self.items: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> Any | None:
        """The value kept under ``key`` (now the most recently used), or None."""
        with self._lock:
            if key not in self.items:
                return None
            self.items.move_to_end(key)
            return self.items[key][0]

    def add(self, key: Hashable, value: Any) -> None:
        """Keep ``value`` under ``key`` (a key already kept keeps its value)."""
        size = nbytes(value)
        with self._lock:
            if key in self.items:
                self.items.move_to_end(key)
                return
            self.items[key] = (value, size)
            self.bytes += size
            while self.items and (
                self.bytes > self.budget
                or (self.max_count is not None and len(self.items) > self.max_count)
            ):
                _, (_, freed) = self.items.popitem(last=False)
                self.bytes -= freed

    def recent_first(self) -> list[tuple[Hashable, Any]]:
        """``(key, value)`` of every entry, most recently used first."""
        with self._lock:
            return [(k, v) for k, (v, _) in reversed(self.items.items())]

    def __call__(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        """The value under ``key``, computed (outside the cache's lock) and kept when
        missing."""
        found = self.get(key)
        if found is not None:
            return found
        value = compute()
        self.add(key, value)
        return value


__all__ = [
    "AnswerCache",
    "nbytes",
]
