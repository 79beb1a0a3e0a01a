"""Reading image files and turning them into model inputs.

Any PIL-readable file works: grayscale, RGB, RGBA (composited on white), palette
and 16-bit images are converted to the channels the model expects. A model's
:class:`Preprocessing` says how: one geometry (resize, or resize then centre crop) that
serves the image, a region's box and a mask alike.
"""

from __future__ import annotations

import dataclasses
import io
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

RESAMPLING = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "nearest": Image.Resampling.NEAREST,
    "lanczos": Image.Resampling.LANCZOS,
}


@dataclass(frozen=True)
class Preprocessing:
    """How an image becomes a model input: resize to ``size`` x ``size``, or resize the
    shorter side to ``resize`` and centre-crop ``crop`` x ``crop``; scale to [0, 1];
    invert (``1 - x``) when asked; then ``(x - mean) / std`` per channel."""

    channels: int = 3
    size: int | None = None  # square resize (FashionMNIST: 28); None = resize + crop
    resize: int = 256  # shorter side, when size is None
    crop: int = 224  # centre crop after resize, when size is None
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)
    invert: bool = False  # FashionMNIST draws light garments on black
    kind: str = ""  # a name for the convention: "imagenet", "fashion-mnist"
    interpolation: str = "bilinear"  # resampling of the resize: bilinear or bicubic (timm)

    def __post_init__(self) -> None:
        if self.interpolation not in RESAMPLING:
            raise ValueError(
                f"unknown interpolation {self.interpolation!r}; choose one of "
                + ", ".join(RESAMPLING)
            )

    @property
    def resample(self) -> Image.Resampling:
        """The PIL filter of the resize."""
        return RESAMPLING[self.interpolation]

    @property
    def input_size(self) -> tuple[int, int]:
        """``(H, W)`` of the model input."""
        side = self.size if self.size is not None else self.crop
        return side, side

    def replace(self, **changes: Any) -> Preprocessing:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Preprocessing:
        """From a model record's ``preprocessing`` mapping (unknown keys are an error)."""
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - fields)
        if unknown:
            raise ValueError(f"unknown preprocessing keys {unknown}; valid: {sorted(fields)}")
        values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
        return cls(**values)


# torchvision's and CSAIL's ImageNet-style evaluation: shorter side 256, centre crop 224.
IMAGENET_PREPROCESSING = Preprocessing(
    kind="imagenet", mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)
)


# Pillow's own default: larger images are refused as possible decompression bombs (a
# small file that expands to gigabytes of pixels).
DEFAULT_MAX_PIXELS = 89_478_485
MAX_PIXELS_ENV = "CONVLENS_MAX_IMAGE_PIXELS"
_PIL_LIMIT_LOCK = threading.Lock()


class ImageTooLargeError(ValueError):
    """An image has more pixels than the decompression-bomb limit."""


def max_image_pixels() -> int:
    """The most pixels convlens decodes in one image: ``$CONVLENS_MAX_IMAGE_PIXELS``,
    else Pillow's default of 89,478,485 (about 9459 x 9459)."""
    text = os.environ.get(MAX_PIXELS_ENV)
    if not text:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"{MAX_PIXELS_ENV}={text!r}: expected a positive number of pixels")
    return value


def open_image(
    path: str | os.PathLike[str],
    channels: int = 3,
    *,
    data: bytes | None = None,
    check: Callable[[Image.Image], None] | None = None,
) -> Image.Image:
    """Open ``path`` as an 8-bit ``RGB`` (channels=3) or ``L`` (channels=1) image.

    With ``data``, the image is decoded from those bytes and ``path`` only names it in
    messages (nothing touches the disk). ``check`` sees the opened image before any
    pixel is decoded (its size and mode come from the header) and may raise.

    Raises:
        ImageTooLargeError: more pixels than :func:`max_image_pixels` (checked from the
            header, before any pixel is decoded).
        ValueError: missing, unreadable or non-image file.
    """
    path = Path(path)
    if data is None and not path.is_file():
        raise ValueError(f"image {path} does not exist")
    limit = max_image_pixels()
    try:
        with _PIL_LIMIT_LOCK:  # Pillow's limit is a module global: ours replaces it here
            saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
            try:
                im = Image.open(path if data is None else io.BytesIO(data))
            finally:
                Image.MAX_IMAGE_PIXELS = saved
        with im:
            w, h = im.size
            if w * h > limit:
                raise ImageTooLargeError(
                    f"{path} is {w}x{h} = {w * h:,} pixels, more than the limit of {limit:,} "
                    "that guards against decompression bombs; if you trust the file, raise "
                    f"the limit with the environment variable {MAX_PIXELS_ENV}"
                )
            if check is not None:
                check(im)
            im.load()
            img = _to_8bit(im)
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise ValueError(f"{path} is not a readable image ({e})") from e
    return img.convert("L" if channels == 1 else "RGB")


# Bytes per pixel at the peak of decoding and conversion to 8 bits, by PIL mode: the
# decoded image (PIL keeps RGB in 4 bytes), plus the float64 copies that 16-bit and
# float images pass through, plus the RGBA composite of images with transparency.
_PEAK_BYTES_PER_PIXEL = {"1": 2, "L": 6, "P": 14, "RGB": 8, "YCbCr": 8, "LAB": 8, "HSV": 8,
                         "CMYK": 8, "RGBA": 16, "LA": 16, "PA": 16, "I;16": 22, "I;16B": 22,
                         "I;16L": 22, "I": 28, "F": 28}  # fmt: skip


def decode_bytes(im: Image.Image) -> int:
    """An upper estimate of the memory that decoding ``im`` (opened, not loaded) takes,
    from its header: width x height x bytes per pixel of its mode at the peak."""
    w, h = im.size
    return w * h * _PEAK_BYTES_PER_PIXEL.get(im.mode, 28)


def _to_8bit(im: Image.Image) -> Image.Image:
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(im, dtype=np.float64)
        hi = 65535.0 if im.mode.startswith("I;16") or a.max() > 255 else 255.0
        return Image.fromarray(np.clip(a / hi * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    if im.mode == "F":
        a = np.asarray(im, dtype=np.float64)
        lo, hi = float(a.min()), float(a.max())
        scaled = (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)
        return Image.fromarray((scaled * 255 + 0.5).astype(np.uint8), "L")
    if im.mode == "P":
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA"):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if im.mode == "1":
        return im.convert("L")
    if im.mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        return im.convert("RGB")
    return im


def geometry(
    size: tuple[int, int], preprocessing: Preprocessing
) -> tuple[float, float, int, int, int, int]:
    """How preprocessing maps an image of ``size`` (W, H) onto the model input.

    Returns ``(sx, sy, left, top, out_w, out_h)``: a point ``(x, y)`` of the original
    image lands at ``(x * sx - left, y * sy - top)`` of the ``out_w x out_h`` input.
    """
    w, h = size
    if preprocessing.size is not None:
        s = preprocessing.size
        return s / w, s / h, 0, 0, s, s
    scale = preprocessing.resize / min(w, h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    c = preprocessing.crop
    return nw / w, nh / h, (nw - c) // 2, (nh - c) // 2, c, c


def resize_crop(
    img: Image.Image, preprocessing: Preprocessing, resample: Image.Resampling
) -> Image.Image:
    """``img`` resized and cropped as :func:`geometry` says."""
    sx, sy, left, top, ow, oh = geometry(img.size, preprocessing)
    w, h = img.size
    img = img.resize((max(1, round(w * sx)), max(1, round(h * sy))), resample)
    return img.crop((left, top, left + ow, top + oh))


def preprocess(img: Image.Image, preprocessing: Preprocessing) -> torch.Tensor:
    """One image -> a normalised float tensor ``[C, H, W]`` as ``preprocessing`` says
    (resampled with its ``interpolation``)."""
    img = img.convert("L" if preprocessing.channels == 1 else "RGB")
    img = resize_crop(img, preprocessing, preprocessing.resample)
    a = torch.from_numpy(np.asarray(img, dtype=np.float32).copy()) / 255.0
    x = a[None] if a.ndim == 2 else a.permute(2, 0, 1)
    if preprocessing.invert:
        x = 1.0 - x
    return normalize(x, preprocessing)


def normalize(x: torch.Tensor, preprocessing: Preprocessing) -> torch.Tensor:
    """Pixels in [0, 1] ``[..., C, H, W]`` -> ``(x - mean) / std`` per channel."""
    mean = torch.tensor(preprocessing.mean, dtype=torch.float32)[:, None, None]
    std = torch.tensor(preprocessing.std, dtype=torch.float32)[:, None, None]
    return (x - mean) / std


def to_display(x: torch.Tensor, preprocessing: Preprocessing) -> torch.Tensor:
    """Undo normalisation of one input ``[C, H, W]`` -> values in [0, 1] for display."""
    mean = torch.tensor(preprocessing.mean, dtype=x.dtype, device=x.device)[:, None, None]
    std = torch.tensor(preprocessing.std, dtype=x.dtype, device=x.device)[:, None, None]
    return (x * std + mean).clamp(0, 1)


def load_batch(
    paths: Sequence[str | os.PathLike[str]], preprocessing: Preprocessing
) -> torch.Tensor:
    """Read and preprocess several files into one batch ``[N, C, H, W]``."""
    return torch.stack(
        [preprocess(open_image(p, preprocessing.channels), preprocessing) for p in paths]
    )


@dataclass(frozen=True)
class Inputs:
    """A batch of model inputs and where they came from."""

    x: torch.Tensor  # [N, C, H, W], normalised
    names: tuple[str, ...]
    sizes: tuple[tuple[int, int], ...]  # original (W, H) of each image
    labels: tuple[int | None, ...] = ()  # the true class where known, else None


def load_files(paths: Sequence[str | os.PathLike[str]], preprocessing: Preprocessing) -> Inputs:
    """Image files as a batch of model inputs, with their names and original sizes."""
    if not paths:
        raise ValueError("no images given")
    xs, sizes = [], []
    for path in paths:
        img = open_image(path, preprocessing.channels)
        sizes.append(img.size)
        xs.append(preprocess(img, preprocessing))
    names = tuple(str(p) for p in paths)
    return Inputs(torch.stack(xs), names, tuple(sizes), (None,) * len(names))


def stack_inputs(parts: Sequence[Inputs]) -> Inputs:
    """Several :class:`Inputs` as one batch, in order."""
    return Inputs(
        torch.cat([p.x for p in parts]),
        tuple(n for p in parts for n in p.names),
        tuple(s for p in parts for s in p.sizes),
        tuple(lab for p in parts for lab in p.labels),
    )


# ----------------------------------------------------------------------------- regions


def box_mask(box: tuple[float, float, float, float], size: tuple[int, int]) -> torch.Tensor:
    """Boolean ``[H, W]`` mask of the pixels whose centres lie inside ``box``.

    ``box`` is ``(x0, y0, x1, y1)`` in pixel coordinates with the origin at the
    top-left corner of the image (pixel ``(r, c)`` has centre ``(c + .5, r + .5)``).
    """
    x0, y0, x1, y1 = box
    if not (x1 > x0 and y1 > y0):
        raise ValueError(f"region {box} is empty: need x0 < x1 and y0 < y1")
    h, w = size
    ys = torch.arange(h, dtype=torch.float32)[:, None] + 0.5
    xs = torch.arange(w, dtype=torch.float32)[None, :] + 0.5
    mask = (ys >= y0) & (ys < y1) & (xs >= x0) & (xs < x1)
    if not mask.any():
        raise ValueError(f"region {box} covers no pixel of the {w}x{h} model input")
    return mask


def transform_box(
    box: tuple[float, float, float, float], size: tuple[int, int], preprocessing: Preprocessing
) -> tuple[float, float, float, float]:
    """A box ``(x0, y0, x1, y1)`` in original-image pixels -> model-input pixels."""
    sx, sy, left, top, _, _ = geometry(size, preprocessing)
    x0, y0, x1, y1 = box
    return x0 * sx - left, y0 * sy - top, x1 * sx - left, y1 * sy - top


def region_from_box(
    box: tuple[float, float, float, float], size: tuple[int, int], preprocessing: Preprocessing
) -> torch.Tensor:
    """A box in the original image's pixels (of ``size`` W x H) as a boolean mask
    ``[H, W]`` over the model input."""
    return box_mask(transform_box(box, size, preprocessing), preprocessing.input_size)


def load_mask(
    path: str | os.PathLike[str], size: tuple[int, int], preprocessing: Preprocessing
) -> torch.Tensor:
    """A mask image (nonzero = inside) of the original image's size -> boolean
    ``[H, W]`` in model-input pixels (same resize and crop, nearest neighbour)."""
    mask = open_image(path, channels=1)
    if mask.size != size:
        raise ValueError(
            f"mask {path} is {mask.size[0]}x{mask.size[1]} but the image is "
            f"{size[0]}x{size[1]}; draw the mask at the image's size"
        )
    m = resize_crop(mask, preprocessing, Image.Resampling.NEAREST)
    out = torch.from_numpy(np.asarray(m).copy()) > 0
    if not out.any():
        raise ValueError(f"mask {path} is empty inside the model's view of the image")
    return out


__all__ = [
    "DEFAULT_MAX_PIXELS",
    "IMAGENET_PREPROCESSING",
    "MAX_PIXELS_ENV",
    "RESAMPLING",
    "ImageTooLargeError",
    "Inputs",
    "Preprocessing",
    "box_mask",
    "decode_bytes",
    "geometry",
    "load_batch",
    "load_files",
    "load_mask",
    "max_image_pixels",
    "normalize",
    "open_image",
    "preprocess",
    "region_from_box",
    "resize_crop",
    "stack_inputs",
    "to_display",
    "transform_box",
]
