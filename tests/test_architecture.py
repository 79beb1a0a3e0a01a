"""The package layout is the architecture: each sub-package may import only the ones
below it, so that a newcomer reads the dependency direction off the tree."""

from __future__ import annotations

import ast
from pathlib import Path

import convlens

ROOT = Path(convlens.__file__).parent

# What each part may import (besides itself). The order is the layering, bottom first.
ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "data": {"core"},
    "config": set(),
    "models": {"core", "data", "config"},
    "inference": {"core", "data"},
    "interpret": {"core", "data"},
    "training": {"core", "data", "config", "models", "inference"},
    "sweep": {"core", "config", "training"},
    "render": {"core", "data", "config", "models", "interpret", "sweep"},
    "serve": {"core", "data", "models", "inference", "interpret", "render"},
    "cli": {
        "core",
        "data",
        "config",
        "models",
        "inference",
        "interpret",
        "training",
        "sweep",
        "render",
        "serve",
    },
}


def part_of(module: str) -> str:
    return module.split(".")[1]


def imports_of(path: Path) -> set[str]:
    """The convlens modules that ``path`` imports (``from convlens import x`` -> x)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("convlens"):
            if node.module == "convlens":
                found |= {f"convlens.{a.name}" for a in node.names}
            else:
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("convlens.")}
    return found


def test_every_part_imports_only_the_layers_below_it() -> None:
    wrong = []
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("").parts
        if rel == ("__init__",):
            continue  # the public API gathers from every part
        part = rel[0]
        assert part in ALLOWED, f"{path}: a new part of the package; place it in ALLOWED"
        for target in imports_of(path):
            other = part_of(target)
            if other != part and other not in ALLOWED[part]:
                wrong.append(f"{'/'.join(rel)}.py imports {target}")
    assert not wrong, "\n".join(wrong)


def test_the_library_never_imports_the_cli() -> None:
    for path in ROOT.rglob("*.py"):
        if path.relative_to(ROOT).parts[0] != "cli":
            assert not any(part_of(t) == "cli" for t in imports_of(path)), path


def test_the_readme_lists_the_public_api() -> None:
    """The README's API table names exactly ``convlens.__all__``, and each name loads."""
    readme = (ROOT.parents[1] / "README.md").read_text()
    section = readme.split("### Python API", 1)[1].split("###", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and "`" in line]
    listed = {name for row in rows for name in row.split("|")[2].replace("`", "").split(", ")}
    listed = {name.strip() for name in listed}
    assert listed == set(convlens.__all__)
    for name in convlens.__all__:
        assert getattr(convlens, name) is not None
