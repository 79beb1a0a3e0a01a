from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.helpers import ROOT, needs_fashion

NOTEBOOK = ROOT / "notebooks" / "problem_set.ipynb"


@needs_fashion
@pytest.mark.slow
def test_notebook_shows_its_figures_in_a_jupyter_kernel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Execute the notebook as Jupyter does (nbclient driving an IPython kernel) with its
    small settings, and read what a user would see: every figure cell must produce a
    PNG picture, not the text of a Figure object, and no cell may warn or fail."""
    monkeypatch.setitem(os.environ, "CONVLENS_NOTEBOOK_SMALL", "1")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    cells = [c for c in nb.cells if c.cell_type == "code"]
    assert len(cells) >= 12
    pictures, texts, stderr = 0, [], []
    for cell in cells:
        for out in cell.outputs:
            if out.output_type in ("execute_result", "display_data"):
                data = out["data"]
                if "image/png" in data:
                    assert data["image/png"], "empty picture"
                    pictures += 1
                else:
                    texts.append(data.get("text/plain", ""))
            elif out.output_type == "stream" and out.name == "stderr":
                stderr.append(out.text)
    assert pictures >= 8
    assert not [t for t in texts if "<Figure size" in t], texts
    assert not [s for s in stderr if "IProgress" in s or "Warning" in s], stderr
    assert (tmp_path / "notebook-runs" / "run" / "model.pt").is_file()
