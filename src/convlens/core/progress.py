"""Progress bars that fit where they are shown.

In a Jupyter kernel with ipywidgets installed the bar is a widget; everywhere else
(terminals, scripts, notebooks without ipywidgets) it is tqdm's text bar. ``tqdm.auto``
would warn "IProgress not found" in a notebook without ipywidgets; this does not.
"""

from __future__ import annotations

import importlib.util
import sys
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


__all__ = [
    "in_notebook",
    "progress_bar",
]
