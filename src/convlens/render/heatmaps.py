"""How a map is drawn over its image: the one place that colours maps.

Two kinds of map, drawn as their readers expect:

- **Signed attributions** (the pixel methods: Integrated Gradients, Input x Gradient,
  Occlusion, ...), as captum's ``visualize_image_attr`` draws them. A *sign mode* picks
  what is shown: ``"all"`` (both signs, on a diverging colormap whose centre is zero),
  ``"positive"``, ``"negative"`` or ``"absolute"`` (on a sequential colormap). The map
  is divided by a clip value ``t`` and clipped to [-1, 1]: ``t`` is the smallest ``|a|``
  such that the values up to it hold ``100 - outlier_percentile`` % of the total
  ``|a|`` (captum's cumulative-sum threshold: the top 2 % of the attribution mass, by
  default, saturates). Over the image the colour's opacity grows with ``|a| / t``, so
  a zero attribution leaves the image as it is: zero is neutral.
- **Class activation maps** (the CAM family: non-negative after their ReLU), min-max
  scaled to [0, 1] and drawn on ``jet`` at a constant opacity, as torchcam and
  pytorch-grad-cam draw them.

Each method declares its natural sign mode in the method registry
(:attr:`convlens.interpret.maps.registry.Method.sign`); :meth:`MapStyle.for_method`
reads it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import matplotlib
import matplotlib.cm
import matplotlib.colors
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from convlens.interpret.maps import registry
from convlens.interpret.maps.base import ClassMaps
from convlens.render.figure import png_bytes

SIGNS = registry.SIGNS
SCALES = ("clip", "minmax")
# colormaps by sign mode: a diverging one centred at zero, sequential ones for one sign
COLORMAPS = {"all": "RdBu_r", "positive": "Reds", "negative": "Blues", "absolute": "viridis"}
CAM_COLORMAP = "jet"
DIM = (0.1, 0.65)  # under an attribution, the image's grey levels go to 0.1 + 0.65 * value


@dataclass(frozen=True)
class MapStyle:
    """How to draw one map.

    Attributes:
        sign: for signed attributions, which values to show (see the module doc).
        outlier_percentile: the share (%) of the total ``|a|`` above the clip value,
            drawn saturated (captum's ``outlier_perc``, default 2).
        scale: ``"clip"`` (attributions: divide by the clip value) or ``"minmax"``
            (CAMs: the map is already min-max scaled to [0, 1]).
        cmap: a matplotlib colormap name; default by ``sign`` (:data:`COLORMAPS`) or
            ``jet`` for ``minmax``.
        alpha: the colour's opacity over the image at full scale.
    """

    sign: str = "all"
    outlier_percentile: float = 2.0
    scale: str = "clip"
    cmap: str | None = None
    alpha: float = 0.85

    def __post_init__(self) -> None:
        if self.sign not in SIGNS:
            raise ValueError(f"unknown sign mode {self.sign!r}; choose one of {', '.join(SIGNS)}")
        if self.scale not in SCALES:
            raise ValueError(f"unknown scale {self.scale!r}; choose one of {', '.join(SCALES)}")
        if not 0 <= self.outlier_percentile < 100:
            raise ValueError(
                f"the outlier percentile must be in [0, 100), got {self.outlier_percentile}"
            )
        if not 0 <= self.alpha <= 1:
            raise ValueError(f"alpha must be in [0, 1], got {self.alpha}")
        if self.cmap is not None and self.cmap not in matplotlib.colormaps:
            raise ValueError(f"unknown colormap {self.cmap!r}")

    @classmethod
    def for_method(
        cls, method: str, sign: str | None = None, outlier_percentile: float | None = None
    ) -> MapStyle:
        """The style a method's maps are drawn in: min-max on ``jet`` for the CAM family,
        the method's own sign mode (or ``sign``) with clipping for pixel attributions."""
        row = registry.method(method)
        if row.family == registry.CAM:
            return cls(sign="positive", scale="minmax", alpha=0.5)
        style = cls(sign=sign or row.sign)
        if outlier_percentile is not None:
            style = replace(style, outlier_percentile=outlier_percentile)
        return style

    @property
    def colormap(self) -> matplotlib.colors.Colormap:
        if self.cmap is not None:
            return matplotlib.colormaps[self.cmap]
        return matplotlib.colormaps[
            CAM_COLORMAP if self.scale == "minmax" else COLORMAPS[self.sign]
        ]

    @property
    def limits(self) -> tuple[float, float]:
        """The range of the scaled values: [-1, 1] for ``all``, [0, 1] otherwise."""
        return (-1.0, 1.0) if self.scale == "clip" and self.sign == "all" else (0.0, 1.0)

    def describe(self) -> str:
        """A caption fragment saying how the map is drawn."""
        if self.scale == "minmax":
            return "min-max scaled"
        shown = {
            "all": "both signs (red: for the class, blue: against; zero leaves the image)",
            "positive": "positive attributions only",
            "negative": "negative attributions only (darker: more against the class)",
            "absolute": "absolute values",
        }[self.sign]
        return f"{shown}, clipped at the top {self.outlier_percentile:g}% of |attribution|"


# a unit's activation map, scaled by its own peak (:func:`by_peak`), as a CAM is drawn
ACTIVATIONS = MapStyle(sign="positive", scale="minmax", alpha=0.5)


def by_peak(m: torch.Tensor) -> torch.Tensor:
    """An activation map divided by its own peak, so weak units stay visible (negative
    values, before a ReLU, clip to zero when drawn)."""
    hi = float(m.max())
    return m / hi if hi > 0 else m


def clip_value(a: np.ndarray, outlier_percentile: float) -> float:
    """The smallest ``|a|`` up to which the sorted ``|a|`` sum to ``100 -
    outlier_percentile`` % of their total (captum's ``_cumulative_sum_threshold``, in
    the map's own dtype, as captum computes it); 0 for an all-zero map."""
    values = np.sort(np.abs(a).ravel())
    sums = np.cumsum(values)
    if values.size == 0 or sums[-1] == 0:
        return 0.0
    index = np.nonzero(sums >= sums[-1] * 0.01 * (100.0 - outlier_percentile))[0][0]
    return float(values[index])


def scale_attribution(
    a: torch.Tensor | np.ndarray, sign: str = "all", outlier_percentile: float = 2.0
) -> np.ndarray:
    """One ``[H, W]`` attribution map scaled for colouring, as captum's
    ``_normalize_attr``: values of the sign mode kept (``absolute``: ``|a|``), divided by
    the clip value (:func:`clip_value`; its negative for ``negative``, so that result is
    non-negative too) and clipped to [-1, 1]. An all-zero map stays zero."""
    if sign not in SIGNS:
        raise ValueError(f"unknown sign mode {sign!r}; choose one of {', '.join(SIGNS)}")
    m = a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
    if m.ndim != 2:
        raise ValueError(f"a map must be [H, W], got shape {tuple(m.shape)}")
    kept = {
        "all": m,
        "positive": np.maximum(m, 0),
        "negative": np.minimum(m, 0),
        "absolute": np.abs(m),
    }[sign]
    t = clip_value(kept, outlier_percentile)
    if t == 0:
        return np.zeros_like(kept)
    return np.clip(kept / (-t if sign == "negative" else t), -1, 1)


def map_rgba(m: torch.Tensor | np.ndarray, style: MapStyle) -> np.ndarray:
    """``[H, W, 4]`` floats in [0, 1]: the map's colours, with the opacity each pixel
    gets over the image (``alpha`` for a min-max map; ``alpha * |scaled|`` for an
    attribution, so zero is transparent)."""
    if style.scale == "minmax":
        v = m.detach().cpu().numpy() if isinstance(m, torch.Tensor) else np.asarray(m)
        v = np.clip(v, 0, 1)
        rgba = style.colormap(v)
        rgba[..., 3] = style.alpha
        return np.asarray(rgba)
    v = scale_attribution(m, style.sign, style.outlier_percentile)
    lo, hi = style.limits
    rgba = style.colormap((v - lo) / (hi - lo))
    rgba[..., 3] = style.alpha * np.abs(v)
    return np.asarray(rgba)


def overlay(image: torch.Tensor, m: torch.Tensor | np.ndarray, style: MapStyle) -> np.ndarray:
    """``[H, W, 3]`` RGB in [0, 1]: the map's colours blended over ``image`` (``[C, H,
    W]`` in [0, 1], grayscale or RGB) with :func:`map_rgba`'s opacity; under an
    attribution the image is shown in grey and dimmed (:data:`DIM`), so that weak
    colours show on white."""
    img = image.detach().cpu().float().clamp(0, 1)
    rgb = (img.expand(3, -1, -1) if img.shape[0] == 1 else img[:3]).permute(1, 2, 0).numpy()
    rgba = map_rgba(m, style)
    if rgba.shape[:2] != rgb.shape[:2]:
        raise ValueError(f"the map is {rgba.shape[:2]}, the image {rgb.shape[:2]}: upsample it")
    if style.scale == "clip":
        # as captum's blended heat map: the image in grey (colours are the map's), a
        # little darker, so that pale colours show on white
        grey = rgb @ np.array([0.299, 0.587, 0.114], dtype=rgb.dtype)
        rgb = DIM[0] + DIM[1] * np.repeat(grey[..., None], 3, axis=2)
    a = rgba[..., 3:]
    return np.asarray(rgb * (1 - a) + rgba[..., :3] * a)


def draw_map(ax: Axes, image: torch.Tensor, m: torch.Tensor | np.ndarray, style: MapStyle) -> None:
    """The map over ``image`` on ``ax``, axes hidden."""
    ax.imshow(overlay(image, m, style), interpolation="nearest")
    ax.set_axis_off()


def add_colorbar(
    fig: Figure,
    axes: Sequence[Axes] | Axes,
    style: MapStyle,
    label: str = "",
    location: str = "right",
) -> None:
    """A colour bar for maps drawn in ``style``, beside ``axes`` (``location``: right or
    bottom): -1 to 1 (or 0 to 1) in units of the clip value, or the min-max scale of a
    CAM."""
    lo, hi = style.limits
    mappable = matplotlib.cm.ScalarMappable(
        norm=matplotlib.colors.Normalize(lo, hi), cmap=style.colormap
    )
    bar = fig.colorbar(
        mappable, ax=axes, location=location, fraction=0.04, pad=0.02, shrink=0.85, aspect=25
    )
    if not label:
        label = "map (min-max)" if style.scale == "minmax" else "attribution / clip"
        if style.scale == "clip" and style.sign != "all":
            label = f"{style.sign} {label}"
    bar.set_label(label, fontsize=8)
    bar.ax.tick_params(labelsize=7)


def drawable(
    result: ClassMaps, sign: str | None = None, outlier_percentile: float | None = None
) -> tuple[torch.Tensor, MapStyle]:
    """What to draw of a method's :class:`ClassMaps` and how: a CAM's min-max maps
    upsampled to the input, or a pixel method's signed maps with its sign mode (or
    ``sign``); ``[N, T, H, W]`` at the input's size."""
    style = MapStyle.for_method(result.method, sign, outlier_percentile)
    return (result.upsampled if style.scale == "minmax" else result.maps), style


def heat_rgba_bytes(m: torch.Tensor | np.ndarray, style: MapStyle) -> np.ndarray:
    """``[H, W, 4]`` uint8: the map as an RGBA image to lay over the picture in a page
    (the explorer): a CAM opaque (the page sets the opacity), an attribution with its
    own per-pixel opacity (zero transparent)."""
    full = replace(style, alpha=1.0)
    return (map_rgba(m, full) * 255 + 0.5).astype(np.uint8)


def heat_png(m: torch.Tensor, style: MapStyle = ACTIVATIONS) -> bytes:
    """A map ``[H, W]`` as an RGBA heatmap PNG to lay over the image (see
    :func:`heat_rgba_bytes`)."""
    return png_bytes(heat_rgba_bytes(m, style))


__all__ = [
    "ACTIVATIONS",
    "CAM_COLORMAP",
    "COLORMAPS",
    "SIGNS",
    "MapStyle",
    "add_colorbar",
    "by_peak",
    "clip_value",
    "draw_map",
    "drawable",
    "heat_png",
    "heat_rgba_bytes",
    "map_rgba",
    "overlay",
    "scale_attribution",
]
