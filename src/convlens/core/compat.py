"""Keeping old argument names working for one release, with a warning."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


def renamed(old: str, new: str) -> Callable[[F], F]:
    """Accept the keyword ``old`` as a deprecated alias of ``new`` (one release)."""

    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def inner(*args: Any, **kwargs: Any) -> Any:
            moved(kwargs, old, new, fn.__name__)
            return fn(*args, **kwargs)

        return inner  # type: ignore[return-value]

    return wrap


def moved(kwargs: dict[str, Any], old: str, new: str, where: str) -> None:
    """Move ``kwargs[old]`` to ``kwargs[new]`` with a ``DeprecationWarning``."""
    if old not in kwargs:
        return
    if new in kwargs:
        raise TypeError(f"{where}() takes `{new}`; give it alone, not also its old name `{old}`")
    warnings.warn(
        f"{where}(): `{old}` is now called `{new}`; the old name goes in the next release",
        DeprecationWarning,
        stacklevel=3,
    )
    kwargs[new] = kwargs.pop(old)


__all__ = ["moved", "renamed"]
