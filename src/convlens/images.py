"""Reading image files and turning them into model inputs.

Any PIL-readable file works: grayscale, RGB, RGBA (composited on white), palette
and 16-bit images are converted to the channels the model expects.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError


def open_image(path: str | os.PathLike[str], channels: int = 3) -> Image.Image:
    """Open ``path`` as an 8-bit ``RGB`` (channels=3) or ``L`` (channels=1) image.

    Raises:
        ValueError: missing, unreadable or non-image file.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"image {path} does not exist")
    try:
        with Image.open(path) as im:
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
