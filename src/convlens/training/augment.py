"""Batched data augmentation as tensor code: one call transforms a whole batch.

Every function takes a float batch ``[N, C, H, W]`` and a ``torch.Generator`` so
that a run is reproducible from its seed, and returns a new tensor.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def mirror(x: torch.Tensor, which: torch.Tensor) -> torch.Tensor:
    """Mirror left-right the images where ``which`` (bool ``[N]``) is true."""
    return torch.where(which.to(x.device)[:, None, None, None], x.flip(3), x)


def random_flip(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Mirror each image left-right with probability 1/2."""
    return mirror(x, torch.rand(x.shape[0], generator=g, device="cpu") < 0.5)


def random_crop(x: torch.Tensor, pad: int, g: torch.Generator) -> torch.Tensor:
    """Pad by ``pad`` pixels (with the background value, the batch minimum) and take a
    random crop of the original size: a random translation of up to ``pad`` pixels."""
    if pad == 0:
        return x
    n, _, h, w = x.shape
    fill = float(x.amin())
    padded = F.pad(x, (pad, pad, pad, pad), value=fill)
    shifts = torch.randint(0, 2 * pad + 1, (n, 2), generator=g).to(x.device)
    # Gather rows then columns with per-image offsets.
    rows = shifts[:, 0, None] + torch.arange(h, device=x.device)  # [N, H]
    cols = shifts[:, 1, None] + torch.arange(w, device=x.device)  # [N, W]
    c = x.shape[1]
    out = padded.gather(2, rows[:, None, :, None].expand(n, c, h, w + 2 * pad))
    return out.gather(3, cols[:, None, None, :].expand(n, c, h, w))


def random_erase(
    x: torch.Tensor,
    g: torch.Generator,
    p: float = 0.5,
    scale: tuple[float, float] = (0.02, 0.25),
    ratio: tuple[float, float] = (0.3, 3.3),
) -> torch.Tensor:
    """Random erasing (Zhong et al. 2020): with probability ``p`` set a random
    rectangle of area ``scale`` x image and aspect ``ratio`` to the background value."""
    n, _, h, w = x.shape
    area = torch.empty(n).uniform_(*scale, generator=g) * h * w
    log_r = torch.empty(n).uniform_(
        float(torch.log(torch.tensor(ratio[0]))),
        float(torch.log(torch.tensor(ratio[1]))),
        generator=g,
    )
    aspect = torch.exp(log_r)
    eh = torch.sqrt(area * aspect).round().clamp(1, h)
    ew = torch.sqrt(area / aspect).round().clamp(1, w)
    top = (torch.rand(n, generator=g) * (h - eh + 1)).floor()
    left = (torch.rand(n, generator=g) * (w - ew + 1)).floor()
    on = torch.rand(n, generator=g) < p
    ys = torch.arange(h)[None, :]
    xs = torch.arange(w)[None, :]
    in_y = (ys >= top[:, None]) & (ys < (top + eh)[:, None])  # [N, H]
    in_x = (xs >= left[:, None]) & (xs < (left + ew)[:, None])  # [N, W]
    mask = (in_y[:, :, None] & in_x[:, None, :] & on[:, None, None])[:, None].to(x.device)
    return torch.where(mask, torch.full_like(x, float(x.amin())), x)


def alternating_flips(n: int, epoch: int, seed: int) -> torch.Tensor:
    """Which of ``n`` training images to mirror in ``epoch`` (bool ``[n]``) under
    alternating flips (airbench): a random half in even epochs, the other half in odd
    ones, so consecutive epochs show every image both ways round. A pure function of
    the seed, so a resumed run flips as an uninterrupted one."""
    first = torch.rand(n, generator=torch.Generator().manual_seed(seed + 7919)) < 0.5
    return first ^ bool(epoch % 2)


def augment_batch(
    x: torch.Tensor,
    spec: str,
    pad: int,
    g: torch.Generator,
    flips: torch.Tensor | None = None,
) -> torch.Tensor:
    """Apply the '+'-joined augmentations of ``spec`` (e.g. ``'flip+crop'``) in a fixed
    order; ``altflip`` mirrors the images where ``flips`` (bool ``[N]``) is true."""
    if spec == "none":
        return x
    parts = set(spec.split("+"))
    if "flip" in parts:
        x = random_flip(x, g)
    if "altflip" in parts:
        if flips is None or flips.shape != x.shape[:1]:
            raise ValueError("augment 'altflip' needs one flip decision per image (flips)")
        x = mirror(x, flips)
    if "crop" in parts:
        x = random_crop(x, pad, g)
    if "erase" in parts:
        x = random_erase(x, g)
    return x


__all__ = [
    "alternating_flips",
    "augment_batch",
    "mirror",
    "random_crop",
    "random_erase",
    "random_flip",
]
