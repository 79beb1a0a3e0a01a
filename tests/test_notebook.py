from __future__ import annotations

import ast
import json
import os
from pathlib import Path

import matplotlib.figure
import pytest

from tests.conftest import needs_fashion

NOTEBOOK = Path(__file__).parents[1] / "notebooks" / "problem_set.ipynb"


@needs_fashion
def test_notebook_runs_top_to_bottom(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Execute every code cell in order in one namespace, as a kernel would, with the
    notebook's small settings; the last expression of figure cells is a Figure."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(os.environ, "CONVLENS_NOTEBOOK_SMALL", "1")
    cells = [c for c in json.loads(NOTEBOOK.read_text())["cells"] if c["cell_type"] == "code"]
    assert len(cells) >= 12
    namespace: dict[str, object] = {"__name__": "__main__"}
    figures = 0
    for i, cell in enumerate(cells):
        source = "".join(cell["source"])
        tree = ast.parse(source, f"<cell {i}>")
        last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
        try:
            exec(compile(tree, f"<cell {i}>", "exec"), namespace)
            value = (
                eval(compile(ast.Expression(last.value), f"<cell {i}>", "eval"), namespace)
                if last is not None
                else None
            )
        except Exception as e:
            raise AssertionError(f"notebook cell {i} failed: {e}\n{source}") from e
        figures += isinstance(value, matplotlib.figure.Figure)
    assert figures >= 8
    assert (tmp_path / "notebook-runs" / "run" / "model.pt").is_file()
