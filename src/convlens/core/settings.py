"""Settings of a long-running analysis as one frozen dataclass, with keyword overrides.

An analysis that has many knobs (:func:`~convlens.interpret.dissect.dissect`,
:func:`~convlens.interpret.ablation.fewest_units`) takes them as one settings object,
so that its signature stays short and the next option is one field; for a quick call
the same names work as keywords (``dissect(model, data, "layer4", top=4)``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar

T = TypeVar("T")


def settle(kind: type[T], given: T | None, overrides: Mapping[str, Any]) -> T:
    """``given`` (``None``: the defaults of ``kind``) with the fields named in
    ``overrides`` replaced, and checked by its ``check()`` method when it has one; a
    name that is no field is a ``TypeError`` listing them."""
    base = kind() if given is None else given
    if not isinstance(base, kind):
        raise TypeError(f"settings must be a {kind.__name__}, not {type(base).__name__}")
    names = [f.name for f in dataclasses.fields(kind)]  # type: ignore[arg-type]
    unknown = [name for name in overrides if name not in names]
    if unknown:
        raise TypeError(
            f"unexpected keyword {unknown[0]!r}: the settings of {kind.__name__} are "
            f"{', '.join(names)}"
        )
    settled = dataclasses.replace(base, **overrides)  # type: ignore[type-var]
    check = getattr(settled, "check", None)
    if callable(check):
        check()
    return settled


__all__ = ["settle"]
