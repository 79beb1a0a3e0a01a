"""The documentation: a short README, a reference that lists what the code has, and
every figure beside the command that draws it. `mkdocs build --strict` runs in
`make test` (broken links and references fail there)."""

from __future__ import annotations

import re
from pathlib import Path

import convlens
from convlens.interpret.maps import registry

ROOT = Path(convlens.__file__).parents[2]
DOCS = ROOT / "docs"
COMMAND = re.compile(r"`[^`]*(convlens |benchmarks/|make |uv run )[^`]*`")


def test_the_readme_is_a_front_page() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    assert "make demo" in readme and "make test" in readme


def test_the_api_reference_documents_exactly_the_public_api() -> None:
    page = (DOCS / "api.md").read_text()
    documented = re.findall(r"^::: (\S+)$", page, flags=re.M)
    expected = [f"{module}.{name}" for module, name in convlens._API.values()]
    assert sorted(documented) == sorted(expected)
    headings = re.findall(r"^### `(\w+)`$", page, flags=re.M)
    assert sorted(headings) == sorted(convlens.__all__)


def test_the_methods_page_lists_every_registered_method() -> None:
    page = (DOCS / "methods.md").read_text()
    rows = re.findall(r"^\| `(\w+)` \| ([^|]+) \|", page, flags=re.M)
    assert [name for name, _ in rows] == registry.names()
    assert [display.strip() for _, display in rows] == [m.display for m in registry.METHODS]


def test_every_figure_names_the_command_that_draws_it() -> None:
    missing = []
    for page in [ROOT / "README.md", *DOCS.rglob("*.md")]:
        lines = page.read_text().splitlines()
        for n, line in enumerate(lines):
            if re.search(r"!\[[^\]]*\]\([^)]+\.(png|svg|jpg)\)", line):
                near = "\n".join(lines[max(0, n - 15) : n + 8])
                if not COMMAND.search(near):
                    missing.append(f"{page.relative_to(ROOT)}:{n + 1}")
    assert not missing, missing
