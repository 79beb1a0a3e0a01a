"""Atomic file writes and the user cache folder.

Every file convlens writes goes to a temporary name in the target folder and is
renamed into place, so a reader sees the old file or the new one, never half of one.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch


def user_cache_dir() -> Path:
    """``$CONVLENS_CACHE``, else ``$XDG_CACHE_HOME/convlens``, else ``~/.cache/convlens``."""
    env = os.environ.get("CONVLENS_CACHE")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "convlens"


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_directory(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary folder beside ``path`` to fill; on a normal exit it replaces
    ``path`` (whose old contents go), on an exception or Ctrl-C it is removed and
    ``path`` stays as it was. A reader never sees a half-written folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{path} exists and is not a folder")
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial"))
    try:
        os.chmod(tmp, 0o777 & ~_umask())
        yield tmp
        old = None
        if path.exists():
            old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".old"))
            os.replace(path, old / "x")
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A Markdown table of ``header`` and ``rows`` (cells as given), newline-terminated."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def atomic_torch_save(path: str | os.PathLike[str], obj: Any) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


class UnsafeCheckpointError(ValueError):
    """A checkpoint holds pickled Python objects that a weights-only load refuses."""


# torch's weights-only unpickler words its refusals of a pickle in these forms (torch
# 2.6-2.10, torch/_weights_only_unpickler.py); each names what the pickle asked for
_REFUSALS = (
    (r"unsupported GLOBAL (\S+) whose module \S+ is blocked", "{}"),
    (r"Unsupported global: GLOBAL (\S+)", "{}"),
    (r"Can only (?:build|create new object for) .*?(?:but )?got (.+?)(?:$|\n)", "an object of {}"),
    (r"Unsupported operand (\d+)", "pickle opcode {}"),
)


def raise_if_unsafe(path: str | os.PathLike[str], error: BaseException) -> None:
    """Raise :class:`UnsafeCheckpointError` when ``error`` is ``torch.load``'s weights-only
    refusal of ``path`` in one of the forms that name what the pickle asked for (a
    blocked module such as ``os.system``, a global that is not allowed, an object of a
    type it will not build): a file of pickled objects other than tensors and plain
    containers, which could run code when unpickled. An opcode it does not run is what
    random bytes give too, so that form raises a ``ValueError`` that names both
    readings. Other errors pass through untouched."""
    matches = ((re.search(pattern, str(error)), what) for pattern, what in _REFUSALS)
    found, what = next(((m, w) for m, w in matches if m is not None), (None, ""))
    if found is None:  # not a refusal of objects: a truncated or foreign file
        return
    what = what.format(found.group(1).strip().rstrip("."))
    if what.startswith("pickle opcode"):  # what a file of random bytes can look like too
        code = int(found.group(1))
        raise ValueError(
            f"{path} is not a readable PyTorch checkpoint: read as a pickle it uses an "
            f"instruction that weights-only loading does not run ({what}, {chr(code)!r}), so "
            "it is truncated, not a checkpoint at all (an HTML page?), or a pickle of Python "
            "objects other than tensors, which could run code; convlens did not load it. Get "
            "the file again from a source you trust"
        ) from error
    raise UnsafeCheckpointError(
        f"{path} was refused: it holds pickled Python objects other than tensors ({what}), "
        "which could run code when loaded; convlens reads checkpoints with weights_only=True "
        "and never unpickles such objects. Do not load it elsewhere unless you trust it; if "
        "you do, re-save its tensors, e.g. torch.save(model.state_dict(), FILE)"
    ) from error


def load_checkpoint_file(path: str | os.PathLike[str], expect: str | None = None) -> dict[str, Any]:
    """``torch.load(path, weights_only=True)`` with one clear error for a bad file.

    Args:
        path: the file.
        expect: the ``format`` field the file must carry, if any.

    Raises:
        ValueError: missing, unreadable (truncated, not a checkpoint), not a dict,
            or of another format.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"checkpoint {path} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many exception types for a bad file
        raise_if_unsafe(path, e)
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        detail = next((ln for ln in lines if "WeightsUnpickler error" in ln), None)
        detail = detail or (lines[0] if lines else "no detail")
        raise ValueError(
            f"{path} is not a readable PyTorch checkpoint ({type(e).__name__}: {detail}); "
            "it may be truncated or not a checkpoint at all"
        ) from e
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a dict checkpoint, found {type(obj).__name__}")
    if expect is not None and obj.get("format") != expect:
        raise ValueError(f"{path}: expected a {expect} file, found format {obj.get('format')!r}")
    return obj


def fetch_url(
    url: str, *, progress: bool = True, desc: str | None = None, timeout: float = 30.0
) -> bytes:
    """Download ``url`` into memory with a progress bar.

    Raises:
        ValueError: the download failed (no network, HTTP error); the message names
            the URL and says how to provide the file offline.
    """
    import urllib.request

    from tqdm import tqdm

    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            total = int(r.headers.get("Content-Length") or 0) or None
            chunks = []
            with tqdm(
                total=total, unit="B", unit_scale=True, desc=desc or url, disable=not progress
            ) as bar:
                while chunk := r.read(1 << 16):
                    chunks.append(chunk)
                    bar.update(len(chunk))
    except OSError as e:
        raise ValueError(
            f"cannot download {url} ({e}); download it on a connected machine and pass "
            "its path instead"
        ) from e
    return b"".join(chunks)


__all__ = [
    "UnsafeCheckpointError",
    "atomic_directory",
    "atomic_torch_save",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "fetch_url",
    "load_checkpoint_file",
    "markdown_table",
    "raise_if_unsafe",
    "user_cache_dir",
]
