"""Reading image files and turning them into model inputs.

Any PIL-readable file works: grayscale, RGB, RGBA (composited on white), palette
and 16-bit images are converted to the channels the model expects.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

# torchvision's and CSAIL's ImageNet-style evaluation: shorter side 256, centre crop 224.
IMAGENET_PREPROCESSING: dict[str, Any] = {
    "kind": "imagenet",
    "channels": 3,
    "resize": 256,
    "crop": 224,
    "mean": [0.485, 0.456, 0.406],
    "std": [0.229, 0.224, 0.225],
}


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


def open_image(path: str | os.PathLike[str], channels: int = 3) -> Image.Image:
    """Open ``path`` as an 8-bit ``RGB`` (channels=3) or ``L`` (channels=1) image.

    Raises:
        ImageTooLargeError: more pixels than :func:`max_image_pixels` (checked from the
            header, before any pixel is decoded).
        ValueError: missing, unreadable or non-image file.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"image {path} does not exist")
    limit = max_image_pixels()
    try:
        with _PIL_LIMIT_LOCK:  # Pillow's limit is a module global: ours replaces it here
            saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
            try:
                im = Image.open(path)
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
            im.load()
            img = _to_8bit(im)
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise ValueError(f"{path} is not a readable image ({e})") from e
    return img.convert("L" if channels == 1 else "RGB")


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
    size: tuple[int, int], preprocessing: dict[str, Any]
) -> tuple[float, float, int, int, int, int]:
    """How preprocessing maps an image of ``size`` (W, H) onto the model input.

    Returns ``(sx, sy, left, top, out_w, out_h)``: a point ``(x, y)`` of the original
    image lands at ``(x * sx - left, y * sy - top)`` of the ``out_w x out_h`` input.
    """
    w, h = size
    if "size" in preprocessing:
        s = int(preprocessing["size"])
        return s / w, s / h, 0, 0, s, s
    r = int(preprocessing.get("resize", 256))
    scale = r / min(w, h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    c = int(preprocessing.get("crop", 224))
    return nw / w, nh / h, (nw - c) // 2, (nh - c) // 2, c, c


def _resize_crop(
    img: Image.Image, preprocessing: dict[str, Any], resample: Image.Resampling
) -> Image.Image:
    sx, sy, left, top, ow, oh = geometry(img.size, preprocessing)
    w, h = img.size
    img = img.resize((max(1, round(w * sx)), max(1, round(h * sy))), resample)
    return img.crop((left, top, left + ow, top + oh))


def transform_box(
    box: tuple[float, float, float, float], size: tuple[int, int], preprocessing: dict[str, Any]
) -> tuple[float, float, float, float]:
    """A box ``(x0, y0, x1, y1)`` in original-image pixels -> model-input pixels."""
    sx, sy, left, top, _, _ = geometry(size, preprocessing)
    x0, y0, x1, y1 = box
    return x0 * sx - left, y0 * sy - top, x1 * sx - left, y1 * sy - top


def load_mask(
    path: str | os.PathLike[str], size: tuple[int, int], preprocessing: dict[str, Any]
) -> torch.Tensor:
    """A mask image (nonzero = inside) of the original image's size -> boolean
    ``[H, W]`` in model-input pixels (same resize and crop, nearest neighbour)."""
    mask = open_image(path, channels=1)
    if mask.size != size:
        raise ValueError(
            f"mask {path} is {mask.size[0]}x{mask.size[1]} but the image is "
            f"{size[0]}x{size[1]}; draw the mask at the image's size"
        )
    m = _resize_crop(mask, preprocessing, Image.Resampling.NEAREST)
    out = torch.from_numpy(np.asarray(m).copy()) > 0
    if not out.any():
        raise ValueError(f"mask {path} is empty inside the model's view of the image")
    return out


def to_display(x: torch.Tensor, preprocessing: dict[str, Any]) -> torch.Tensor:
    """Undo normalisation of one input ``[C, H, W]`` -> values in [0, 1] for display."""
    c = x.shape[0]
    mean = torch.tensor(preprocessing.get("mean", [0.0] * c), dtype=x.dtype)[:, None, None]
    std = torch.tensor(preprocessing.get("std", [1.0] * c), dtype=x.dtype)[:, None, None]
    return (x * std + mean).clamp(0, 1)


def preprocess(img: Image.Image, preprocessing: dict[str, Any]) -> torch.Tensor:
    """One image -> a normalised float tensor ``[C, H, W]`` as the model's metadata says.

    ``preprocessing`` keys: ``channels``; ``size`` (resize to size x size) or
    ``resize`` (shorter side) plus ``crop`` (centre crop); ``mean``, ``std``;
    ``invert`` (FashionMNIST draws light garments on black).
    """
    channels = int(preprocessing.get("channels", 3))
    img = img.convert("L" if channels == 1 else "RGB")
    if "size" in preprocessing:
        s = int(preprocessing["size"])
        img = img.resize((s, s), Image.Resampling.BILINEAR)
    else:
        r = int(preprocessing.get("resize", 256))
        w, h = img.size
        scale = r / min(w, h)
        img = img.resize(
            (max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BILINEAR
        )
        c = int(preprocessing.get("crop", 224))
        w, h = img.size
        left, top = (w - c) // 2, (h - c) // 2
        img = img.crop((left, top, left + c, top + c))
    a = torch.from_numpy(np.asarray(img, dtype=np.float32).copy()) / 255.0
    x = a[None] if a.ndim == 2 else a.permute(2, 0, 1)
    if preprocessing.get("invert"):
        x = 1.0 - x
    mean = torch.tensor(preprocessing.get("mean", [0.0] * channels), dtype=torch.float32)
    std = torch.tensor(preprocessing.get("std", [1.0] * channels), dtype=torch.float32)
    return (x - mean[:, None, None]) / std[:, None, None]


def load_batch(paths: list[str], preprocessing: dict[str, Any]) -> torch.Tensor:
    """Read and preprocess several files into one batch ``[N, C, H, W]``."""
    channels = int(preprocessing.get("channels", 3))
    return torch.stack([preprocess(open_image(p, channels), preprocessing) for p in paths])


@dataclass(frozen=True)
class Inputs:
    """A batch of model inputs and where they came from."""

    x: torch.Tensor  # [N, C, H, W], normalised
    names: tuple[str, ...]
    sizes: tuple[tuple[int, int], ...]  # original (W, H) of each image
    labels: tuple[int | None, ...] = ()  # the true class where known (test:N), else None


def load_inputs(
    specs: list[str], preprocessing: dict[str, Any], data_dir: str | None = None
) -> Inputs:
    """Image files, or ``test:N`` for FashionMNIST test image N (28x28 models only)."""
    if not specs:
        raise ValueError("no images given")
    xs, sizes = [], []
    labels: list[int | None] = []
    test = None
    for spec in specs:
        if spec.startswith("test:"):
            if int(preprocessing.get("channels", 3)) != 1 or preprocessing.get("size") != 28:
                raise ValueError(
                    f"{spec}: FashionMNIST test images fit 28x28 grayscale "
                    "models only; give an image file"
                )
            from convlens.data import fashion_mnist as data

            test = test or data.load_fashion_mnist("test", data_dir)
            n = int(spec[5:]) if spec[5:].isdigit() else -1
            if not 0 <= n < len(test):
                raise ValueError(f"{spec}: expected test:N with N in 0..{len(test) - 1}")
            xs.append(data.to_float(test.images[n][None])[0])
            sizes.append((28, 28))
            labels.append(int(test.labels[n]))
        else:
            channels = int(preprocessing.get("channels", 3))
            img = open_image(spec, channels)
            sizes.append(img.size)
            labels.append(None)
            xs.append(preprocess(img, preprocessing))
    return Inputs(torch.stack(xs), tuple(specs), tuple(sizes), tuple(labels))
