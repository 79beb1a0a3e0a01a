"""Progress bars that fit where they are shown.

In a Jupyter kernel with ipywidgets installed the bar is a widget; everywhere else
(terminals, scripts, notebooks without ipywidgets) it is tqdm's text bar. ``tqdm.auto``
would warn "IProgress not found" in a notebook without ipywidgets; this does not.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from typing import Any

from tqdm.std import tqdm


def in_notebook() -> bool:
    """True inside a Jupyter kernel (JupyterLab, Notebook, VS Code)."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    shell = ipython.get_ipython()
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


def progress_bar(iterable: Any = None, **kwargs: Any) -> tqdm:
    """``tqdm(iterable, **kwargs)`` of the kind that suits the place it is shown."""
    if in_notebook() and importlib.util.find_spec("ipywidgets") is not None:
        from tqdm.notebook import tqdm as notebook_tqdm

        return notebook_tqdm(iterable, **kwargs)
    return tqdm(iterable, **kwargs)


class JobProgress:
    """One bar (and ``on_step(done, total)``) over every shard of a job: advanced item
    by item (:meth:`advance`) while the shards run in this process, a whole shard at a
    time (:meth:`shard`, ``size(shard)`` items) when it ran elsewhere (a Ray worker
    cannot call back) or was read back from an earlier run."""

    def __init__(
        self,
        total: int,
        show: bool,
        on_step: Callable[[int, int], None] | None,
        here: bool,
        *,
        desc: str,
        unit: str,
        size: Callable[[Any], int] = len,
    ) -> None:
        self.bar = progress_bar(total=total, desc=desc, unit=unit, disable=not show)
        self.total, self.on_step, self.here, self.size = total, on_step, here, size
        self.done = self.resumed = 0

    def advance(self, n: int = 1) -> None:
        self.done += n
        self.bar.update(n)
        if self.on_step is not None:
            self.on_step(self.done, self.total)

    def shard(self, shard: Any, resumed: bool) -> None:
        """A shard of ``size(shard)`` items finished (``resumed``: read back, not
        computed)."""
        self.resumed += resumed
        if resumed or not self.here:
            self.advance(self.size(shard))


__all__ = [
    "JobProgress",
    "in_notebook",
    "progress_bar",
]
