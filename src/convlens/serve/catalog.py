"""The images the explorer can address, each by an id and never by a path: FashionMNIST
test images (``test:N``), a folder's files (``file:N``) and uploads (``upload:HASH``).

An upload is decoded from memory, refused from its header when decoding it would take
too much memory (:data:`LIMITS`), and kept under the hash of its bytes, so the same file
gets the same id and another file never does (also after a restart); only the model
input and the thumbnail are kept, in memory, the most recently used first.
"""

from __future__ import annotations

import hashlib
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from convlens.data import fashion_mnist
from convlens.data.images import Preprocessing, decode_bytes, open_image, preprocess, to_display
from convlens.data.sources import IMAGE_SUFFIXES
from convlens.serve.cache import AnswerCache

MAX_UPLOAD_BYTES = 20 * 1024 * 1024
MAX_DECODE_BYTES = 256 * 1024 * 1024  # memory one decode may take, from the header
MAX_ASPECT = 10  # longest side / shortest side: a 20000x5 strip resizes to a gigabyte
MAX_UPLOADS = 64  # uploads kept, most recently used first
MAX_UPLOAD_STORE_BYTES = 256 * 1024 * 1024  # and their inputs and thumbnails, in bytes
DECODE_SLOTS = 2  # uploads decoded at once
LIMITS = (
    f"uploads up to {MAX_UPLOAD_BYTES // 2**20} MB per file and {MAX_DECODE_BYTES // 2**20} MB "
    f"once decoded, sides at most {MAX_ASPECT}:1; the {MAX_UPLOADS} most recently used are kept"
)
# ids: a position in the data set or folder, or the hash of an upload's bytes (ASCII
# digits only, and nothing after: fullmatch, not a $ that allows a final newline)
_ID = re.compile(r"(test|file):([0-9]{1,9})|upload:([0-9a-f]{16})")


class NotFoundError(LookupError):
    """An image, layer, unit or class id that does not exist (HTTP 404)."""


class BadRequestError(ValueError):
    """A request that cannot be answered as asked (HTTP 400 or 413)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Entry:
    """One image of the catalogue."""

    x: torch.Tensor  # [1, C, H, W] model input
    shown: torch.Tensor  # [C, H, W] in [0, 1], as the model sees it
    name: str
    label: int | None


def _within_limits(im: Image.Image) -> None:
    """Refuse an upload from its header when decoding or resizing it would take too
    much memory (see :data:`LIMITS`)."""
    w, h = im.size
    if max(w, h) > MAX_ASPECT * max(1, min(w, h)):
        raise ValueError(f"the image is {w}x{h}, more elongated than {MAX_ASPECT}:1; crop it first")
    need = decode_bytes(im)
    if need > MAX_DECODE_BYTES:
        raise ValueError(
            f"the image is {w}x{h} ({im.mode}), about {need // 2**20} MB once decoded, over "
            f"the limit of {MAX_DECODE_BYTES // 2**20} MB; make it smaller first"
        )


class Catalog:
    """The test images, a folder's files and the uploads, for one model's input
    convention; entries other than uploads are kept in ``cache``."""

    def __init__(
        self,
        preprocessing: Preprocessing,
        cache: AnswerCache,
        images_dir: Path | None = None,
        data: str | None = None,
        data_dir: str | None = None,
    ) -> None:
        p = self.preprocessing = preprocessing
        self._cached = cache
        self.test = None
        if data is not None:
            if data != "test":
                raise ValueError(f"`data` can only be 'test' (FashionMNIST), got {data!r}")
            if not (p.channels == 1 and p.size == 28):
                raise ValueError("`data` test is FashionMNIST, for 28x28 grayscale models only")
            self.test = fashion_mnist.load_fashion_mnist("test", data_dir)
        self.files: list[Path] = []
        if images_dir is not None:
            if not images_dir.is_dir():
                raise ValueError(f"`images` {images_dir} is not a folder")
            self.files = sorted(
                f
                for f in images_dir.rglob("*")
                if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES
            )
            if not self.files:
                raise ValueError(f"`images` {images_dir} holds no image files")
        self.uploads = AnswerCache(MAX_UPLOAD_STORE_BYTES, MAX_UPLOADS)
        self._decoding = threading.BoundedSemaphore(DECODE_SLOTS)

    def image(self, image_id: str) -> Entry:
        """The image called ``image_id`` (``test:N``, ``file:N``, ``upload:HASH``)."""
        m = _ID.fullmatch(image_id)
        if not m:
            shown = image_id if len(image_id) <= 40 else image_id[:40] + "..."
            raise NotFoundError(f"no image {shown!r}: ids are test:N, file:N or upload:HASH")
        if m.group(3) is not None:
            img = self.uploads.get(image_id)
            if img is None:
                raise NotFoundError(
                    f"upload {image_id} has expired (the explorer keeps the {MAX_UPLOADS} most "
                    "recently used uploads) or was never made; upload the file again"
                )
            return img
        kind, n = m.group(1), int(m.group(2))
        return self._cached(("image", image_id), lambda: self._load(kind, n, image_id))

    def _load(self, kind: str, n: int, image_id: str) -> Entry:
        if kind == "test":
            if self.test is None or n >= len(self.test):
                raise NotFoundError(f"no image {image_id!r}")
            x = fashion_mnist.to_float(self.test.images[n : n + 1])
            shown = self.test.images[n].float() / 255.0
            return Entry(x, shown, image_id, int(self.test.labels[n]))
        if n >= len(self.files):
            raise NotFoundError(f"no image {image_id!r}")
        p = self.preprocessing
        x = preprocess(open_image(self.files[n], p.channels), p)[None]
        return Entry(x, to_display(x[0], p), self.files[n].name, None)

    def count(self) -> int:
        """The browsable images (uploads apart)."""
        return (len(self.test) if self.test is not None else 0) + len(self.files)

    def page(self, offset: int, limit: int, classes: tuple[str, ...]) -> dict[str, Any]:
        """A page of the browsable images (test images first, then the folder's), and
        the uploads, most recently used first."""
        if offset < 0 or not 1 <= limit <= 200:
            raise BadRequestError("offset must be >= 0 and limit in 1..200")
        n_test = len(self.test) if self.test is not None else 0
        items: list[dict[str, Any]] = []
        for k in range(offset, min(offset + limit, self.count())):
            if k < n_test:
                assert self.test is not None
                label = classes[int(self.test.labels[k])]
                items.append({"id": f"test:{k}", "name": f"test:{k}", "label": label})
            else:
                name = self.files[k - n_test].name
                items.append({"id": f"file:{k - n_test}", "name": name, "label": None})
        return {
            "total": self.count(),
            "offset": offset,
            "items": items,
            "uploads": [{"id": k, "name": v.name} for k, v in self.uploads.recent_first()],
        }

    def add_upload(self, data: bytes, filename: str, content_type: str | None) -> dict[str, Any]:
        """Decode an uploaded image from memory (never from a path) and keep it under
        the hash of its bytes; see :data:`LIMITS` for what is refused."""
        if len(data) > MAX_UPLOAD_BYTES:
            raise BadRequestError(
                f"upload is {len(data):,} bytes, over the limit of {MAX_UPLOAD_BYTES:,}", 413
            )
        if content_type is not None and not content_type.startswith("image/"):
            raise BadRequestError(f"upload is {content_type}, not an image", 415)
        name = (filename or "upload")[-80:]
        image_id = "upload:" + hashlib.sha256(data).hexdigest()[:16]
        if self.uploads.get(image_id) is not None:
            return {"id": image_id, "name": name}
        p = self.preprocessing
        with self._decoding:  # at most DECODE_SLOTS decodes in memory at once
            try:
                img = open_image(name, p.channels, data=data, check=_within_limits)
            except ValueError as e:
                raise BadRequestError(str(e), 400) from e
            x = preprocess(img, p)[None]
            del img
        self.uploads.add(image_id, Entry(x, to_display(x[0], p), name, None))
        return {"id": image_id, "name": name}


__all__ = [
    "DECODE_SLOTS",
    "LIMITS",
    "MAX_ASPECT",
    "MAX_DECODE_BYTES",
    "MAX_UPLOADS",
    "MAX_UPLOAD_BYTES",
    "MAX_UPLOAD_STORE_BYTES",
    "BadRequestError",
    "Catalog",
    "Entry",
    "NotFoundError",
]
