"""The one table of the map family: every method, its display name, family, options
and defaults, how it is drawn, and whether it runs as a long job.

Everything that lists methods reads this table: the CLI (``convlens cam --method``, the
attribution flags), the explorer's menu, the report, the faithfulness table and the
docs. A method is one class in a member module (:mod:`.cam`, :mod:`.pixel`) and one
:class:`Method` row here; nothing else names it. The table is plain data, loaded
without torch, so that ``convlens --help`` stays fast; a member's class is imported
when first asked for (:func:`method_class`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # types only: the members import this module, never the reverse
    import torch
    from torch import nn

    from convlens.interpret.maps.base import ActivationMapMethod, ClassMaps

CAM, PIXEL = "cam", "pixel"  # the two families
FAMILIES = (CAM, PIXEL)
SIGNS = ("absolute", "positive", "negative", "all")


@dataclass(frozen=True)
class Option:
    """One option of a method: a keyword of its constructor, with the reference's
    default. ``flag``: the CLI flag's name when the CLI exposes it (``None``: API only);
    ``choices``: the values it takes when they are a closed set."""

    name: str
    default: Any
    type: Callable[[str], Any] = str
    help: str = ""
    flag: str | None = None
    choices: tuple[str, ...] | None = None
    metavar: str | None = None  # the CLI's name for its value [the flag's last word]


@dataclass(frozen=True)
class Method:
    """One map method.

    Attributes:
        name: the key used everywhere (``--method``, ``class_maps(method=...)``).
        display: how figures and tables name it.
        family: ``"cam"`` (a weighted sum of a layer's channels) or ``"pixel"`` (an
            attribution at the input).
        target: ``"module:Class"`` of the member that computes it.
        paper: the paper that defines it.
        sign: how its signed map is drawn by default (see
            :func:`convlens.render.maps.attribution_rgba`): ``"positive"`` for maps that
            are non-negative by construction (CAMs after their ReLU), ``"absolute"``
            for magnitudes, ``"all"`` for maps whose sign is evidence for or against.
        long: runs as a job with progress in the explorer (many passes per image).
        default: part of the default method sets (the explorer's menu, the
            faithfulness table); a method of many passes per channel is left out.
        options: its options, with the reference's defaults.
        needs_gap_head: only for a head of global average pooling + one linear layer
            (left out of :func:`every_method` on other models).
        in_all: drawn by :func:`every_method` (``convlens cam --method all``); not a
            method of tens of passes per channel (IS-CAM, SS-CAM), which a user asks for
            by name.
    """

    name: str
    display: str
    family: str
    target: str
    paper: str
    sign: str = "positive"
    long: bool = False
    default: bool = True
    options: tuple[Option, ...] = field(default_factory=tuple)
    needs_gap_head: bool = False
    in_all: bool = True
    # its maps agree with fp32's in bf16 (benchmarks/precision_agreement.py), so
    # --precision auto runs it in bf16 where the hardware has bf16
    bf16: bool = False

    def defaults(self) -> dict[str, Any]:
        """``{option: default}``."""
        return {o.name: o.default for o in self.options}


_BATCH = Option("batch_size", 64, int, "images per pass of the network", "batch-size")
_CAM_BATCH = Option("batch_size", 32, int, "masked or ablated images per pass", "batch-size")
_IG_RULES = (
    "gausslegendre",
    "riemann_left",
    "riemann_right",
    "riemann_middle",
    "riemann_trapezoid",
)
_BASELINE_HELP = "zeros, blur, mean or a number"
# one text for a flag that several methods take (the CLI shows the first row's)
_SAMPLES_HELP = (
    "noisy copies (smoothgrad [16], sscam [35], smoothgradcampp [4]) or path points (iscam [10])"
)
_STDEV_HELP = (
    "noise deviation (smoothgrad [0.15 of each image's range], sscam [2.0], smoothgradcampp [0.3])"
)

_GRADIENT_BASES = ("gradcam", "gradcampp", "xgradcam", "layercam", "hirescam")
_BASE_HELP = "the gradient CAM a method builds on (finercam [gradcam], refinecam [gradcampp])"
_KERNELS = ("linear", "poly", "rbf", "sigmoid", "cosine")  # scikit-learn's KernelPCA's


def class_list(text: str) -> tuple[int, ...]:
    """``"3,5"`` -> ``(3, 5)``: class indices, comma-separated."""
    return tuple(int(part) for part in text.split(",") if part.strip())


def layer_list(text: str) -> tuple[str, ...]:
    """``"layer3,layer4"`` -> ``("layer3", "layer4")``: layer names, comma-separated."""
    return tuple(part.strip() for part in text.split(",") if part.strip())


_CAM = "convlens.interpret.maps.cam"
GRADIENT_FALLBACK = "gradcam"  # the CAM of a model without a GAP + linear head; Finer-CAM's base
REFINE_BASE = "gradcampp"  # Refine-CAM's base, as in both references
_PIXEL = "convlens.interpret.maps.pixel"

METHODS: tuple[Method, ...] = (
    # the CAM family: a weighted sum of one layer's channels, one map per class
    Method(
        "cam", "CAM", "cam", f"{_CAM}:CAM", "Zhou et al., CVPR 2016", needs_gap_head=True, bf16=True
    ),
    Method(
        "gradcam", "Grad-CAM", "cam", f"{_CAM}:GradCAM", "Selvaraju et al., ICCV 2017", bf16=True
    ),
    Method(
        "gradcampp",
        "Grad-CAM++",
        "cam",
        f"{_CAM}:GradCAMpp",
        "Chattopadhyay et al., WACV 2018",
        bf16=True,
        options=(
            Option("reference", "paper", str, "paper or torchcam", choices=("paper", "torchcam")),
        ),
    ),
    Method("xgradcam", "XGrad-CAM", "cam", f"{_CAM}:XGradCAM", "Fu et al., BMVC 2020", bf16=True),
    Method(
        "layercam", "LayerCAM", "cam", f"{_CAM}:LayerCAM", "Jiang et al., IEEE TIP 2021", bf16=True
    ),
    Method("hirescam", "HiResCAM", "cam", f"{_CAM}:HiResCAM", "Draelos and Carin, 2020", bf16=True),
    Method(
        "scorecam",
        "Score-CAM",
        "cam",
        f"{_CAM}:ScoreCAM",
        "Wang et al., CVPR-W 2020",
        default=False,
        bf16=True,
        options=(
            Option(
                "batch_size",
                32,
                int,
                "images per pass of the network (Score-CAM: masked images; lower it when "
                "memory runs out) [Score-CAM 32, the attributions 64]",
                "batch-size",
            ),
            Option(
                "reference",
                "torchcam",
                str,
                "torchcam or pytorch-grad-cam",
                choices=("torchcam", "pytorch-grad-cam"),
            ),
        ),
    ),
    Method(
        "eigencam",
        "Eigen-CAM",
        "cam",
        f"{_CAM}:EigenCAM",
        "Muhammad and Yeasin, IJCNN 2020",
        bf16=True,
    ),
    Method(
        "gradcamelementwise",
        "Grad-CAM element-wise",
        "cam",
        "convlens.interpret.maps.gradcam_elementwise:GradCAMElementWise",
        "pytorch-grad-cam (Gildenblat et al.), 2021",
        bf16=True,
    ),
    Method(
        "eigengradcam",
        "Eigen-Grad-CAM",
        "cam",
        "convlens.interpret.maps.eigen_gradcam:EigenGradCAM",
        "pytorch-grad-cam (Gildenblat et al.), 2021",
        bf16=True,
    ),
    Method(
        "ablationcam",
        "Ablation-CAM",
        "cam",
        "convlens.interpret.maps.ablation_cam:AblationCAM",
        "Desai and Ramaswamy, WACV 2020",
        default=False,
        options=(_CAM_BATCH,),
    ),
    Method(
        "iscam",
        "IS-CAM",
        "cam",
        "convlens.interpret.maps.is_cam:ISCAM",
        "Naidu et al., 2020",
        default=False,
        in_all=False,
        options=(_CAM_BATCH, Option("samples", 10, int, _SAMPLES_HELP, flag="samples")),
    ),
    Method(
        "sscam",
        "SS-CAM",
        "cam",
        "convlens.interpret.maps.ss_cam:SSCAM",
        "Wang et al., CVPR-W 2020",
        bf16=True,
        default=False,
        in_all=False,
        options=(
            _CAM_BATCH,
            Option("samples", 35, int, _SAMPLES_HELP, flag="samples"),
            Option("stdev", 2.0, float, _STDEV_HELP, flag="stdev"),
            Option("seed", 0, int, "noise seed"),
        ),
    ),
    Method(
        "smoothgradcampp",
        "Smooth Grad-CAM++",
        "cam",
        "convlens.interpret.maps.smooth_gradcampp:SmoothGradCAMpp",
        "Omeiza et al., 2019",
        bf16=True,
        default=False,
        options=(
            Option("samples", 4, int, _SAMPLES_HELP, flag="samples"),
            Option("stdev", 0.3, float, _STDEV_HELP, flag="stdev"),
            Option("seed", 0, int, "noise seed"),
        ),
    ),
    Method(
        "kpcacam",
        "KPCA-CAM",
        "cam",
        "convlens.interpret.maps.kpca_cam:KPCACAM",
        "Karmani et al., 2024",
        bf16=True,
        options=(
            Option("kernel", "sigmoid", str, "kpcacam: kernel [sigmoid]", "kernel", _KERNELS),
            Option("gamma", None, float, "kpcacam: the kernel's gamma [1 / channels]", "gamma"),
            Option("degree", 3, int, "kpcacam: the poly kernel's degree [3]", "degree"),
            Option("coef0", 1.0, float, "kpcacam: poly and sigmoid kernels' offset [1]", "coef0"),
        ),
    ),
    Method(
        "shapleycam",
        "Shapley-CAM",
        "cam",
        "convlens.interpret.maps.shapley_cam:ShapleyCAM",
        "Cai et al., 2025",
        bf16=True,
        options=(
            Option(
                "objective",
                "logit",
                str,
                "shapleycam: the class score, its logit or the paper's ReST [logit]",
                "objective",
                ("logit", "rest"),
            ),
        ),
    ),
    Method(
        "finercam",
        "Finer-CAM",
        "cam",
        "convlens.interpret.maps.finer_cam:FinerCAM",
        "Zhang et al., CVPR 2025",
        bf16=True,
        options=(
            Option("base", GRADIENT_FALLBACK, str, _BASE_HELP, "base", _GRADIENT_BASES),
            Option(
                "alpha",
                None,
                float,
                "finercam: weight of the comparison classes [1; torchcam's 0.6]",
                "alpha",
            ),
            Option(
                "comparisons",
                3,
                int,
                "finercam: how many classes nearest the target's logit to compare with [3]",
                "comparisons",
            ),
            Option(
                "compare_with",
                None,
                class_list,
                "finercam: the classes to compare with, comma-separated [the nearest]",
                "compare-with",
                metavar="C1,C2",
            ),
            Option(
                "reference",
                "pytorch-grad-cam",
                str,
                "pytorch-grad-cam or torchcam",
                choices=("pytorch-grad-cam", "torchcam"),
            ),
        ),
    ),
    Method(
        "refinecam",
        "Refine-CAM",
        "cam",
        "convlens.interpret.maps.refine_cam:RefineCAM",
        "Domeniconi et al., 2026",
        bf16=True,
        options=(
            Option(
                "layers",
                None,
                layer_list,
                "refinecam: the layers to fuse, comma-separated [the layer and the last "
                "ones at the two next finer resolutions]",
                "layers",
                metavar="L1,L2",
            ),
            Option("base", REFINE_BASE, str, _BASE_HELP, "base", _GRADIENT_BASES),
            Option(
                "reference",
                "pytorch-grad-cam",
                str,
                "pytorch-grad-cam or torchcam",
                choices=("pytorch-grad-cam", "torchcam"),
            ),
        ),
    ),
    # pixel attributions: at the input, summed over colour channels for the map
    Method(
        "saliency",
        "Saliency",
        "pixel",
        f"{_PIXEL}:Saliency",
        "Simonyan et al., ICLR-W 2014",
        sign="absolute",
        options=(Option("abs", True, bool, "absolute gradients"), _BATCH),
    ),
    Method(
        "inputxgradient",
        "Input x Gradient",
        "pixel",
        f"{_PIXEL}:InputXGradient",
        "Shrikumar et al., 2016",
        sign="all",
        options=(_BATCH,),
    ),
    Method(
        "integratedgradients",
        "Integrated Gradients",
        "pixel",
        f"{_PIXEL}:IntegratedGradients",
        "Sundararajan et al., ICML 2017",
        sign="all",
        long=True,
        options=(
            Option(
                "baseline",
                "zeros",
                str,
                f"integratedgradients and occlusion: {_BASELINE_HELP} [zeros]",
                flag="baseline",
            ),
            Option("steps", 50, int, "integratedgradients: points on the path [50]", flag="steps"),
            Option(
                "rule",
                "gausslegendre",
                str,
                "integratedgradients: quadrature rule [gausslegendre]",
                flag="rule",
                choices=_IG_RULES,
            ),
            Option("tolerance", 0.01, float, "completeness gap that doubles the steps"),
            Option("max_steps", 800, int, "steps at the most"),
            _BATCH,
        ),
    ),
    Method(
        "smoothgrad",
        "SmoothGrad",
        "pixel",
        f"{_PIXEL}:SmoothGrad",
        "Smilkov et al., 2017",
        sign="absolute",
        long=True,
        options=(
            Option("samples", 16, int, _SAMPLES_HELP, flag="samples"),
            Option("stdev", None, float, _STDEV_HELP, flag="stdev"),
            Option("seed", 0, int, "noise seed"),
            _BATCH,
        ),
    ),
    Method(
        "occlusion",
        "Occlusion",
        "pixel",
        f"{_PIXEL}:Occlusion",
        "Zeiler and Fergus, ECCV 2014",
        sign="all",
        long=True,
        options=(
            Option("window", None, int, "occlusion: window side, px [side / 7]", flag="window"),
            Option("stride", None, int, "occlusion: window step, px [window / 2]", flag="stride"),
            Option(
                "baseline",
                0.0,
                str,
                f"integratedgradients and occlusion: {_BASELINE_HELP} [zeros]",
                flag="baseline",
            ),
            _BATCH,
        ),
    ),
    Method(
        "guidedbackprop",
        "Guided Backprop",
        "pixel",
        f"{_PIXEL}:GuidedBackprop",
        "Springenberg et al., ICLR-W 2015",
        sign="all",
        options=(_BATCH,),
    ),
    Method(
        "guidedgradcam",
        "Guided Grad-CAM",
        "pixel",
        f"{_PIXEL}:GuidedGradCAM",
        "Selvaraju et al., ICCV 2017",
        sign="all",
        bf16=True,  # Grad-CAM times a guided gradient: the one pixel method that agrees
        options=(_BATCH,),
    ),
)

_BY_NAME = {m.name: m for m in METHODS}
_BY_TARGET = {m.target: m.name for m in METHODS}  # "module:Class" -> name

DEFAULT_METHOD = "cam"  # what `convlens cam` and the explorer draw when not told
DEFAULT_ATTRIBUTION = "integratedgradients"  # what `attribute` computes when not told
# the pixel attributions the report draws beside the CAM of the top class
REPORT_METHODS = ("saliency", "integratedgradients", "guidedgradcam")
# what `convlens sanity` checks when not told: the methods of Adebayo et al.'s Figure 2
SANITY_METHODS = ("gradcam", "saliency", "inputxgradient", "integratedgradients", "smoothgrad",
                  "guidedbackprop", "guidedgradcam")  # fmt: skip


def names(family: str | None = None, *, default_only: bool = False) -> list[str]:
    """The methods' names in table order, of one ``family`` (``"cam"``, ``"pixel"``)
    or all; ``default_only``: those in the default sets."""
    if family is not None and family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; choose one of {', '.join(FAMILIES)}")
    return [
        m.name
        for m in METHODS
        if (family is None or m.family == family) and (m.default or not default_only)
    ]


def method(name: str) -> Method:
    """The row of ``name``.

    Raises:
        ValueError: an unknown method; the message lists the known ones.
    """
    if name not in _BY_NAME:
        raise ValueError(f"unknown method {name!r}; choose one of {', '.join(_BY_NAME)}")
    return _BY_NAME[name]


def display_names() -> dict[str, str]:
    """``{name: display name}`` of every method."""
    return {m.name: m.display for m in METHODS}


def flags() -> dict[str, Option]:
    """The options the CLI exposes, by flag (one definition per flag)."""
    out: dict[str, Option] = {}
    for m in METHODS:
        for o in m.options:
            if o.flag is not None:
                out.setdefault(o.flag, o)
    return out


def takers(option: str) -> list[str]:
    """The methods that take ``option``."""
    return [m.name for m in METHODS if any(o.name == option for o in m.options)]


def taken(name: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of ``options`` that method ``name`` takes (the rest are other
    methods' options, given once for several)."""
    takes = method(name).defaults()
    return {k: v for k, v in options.items() if k in takes}


def method_class(name: str) -> type[ActivationMapMethod]:
    """The class that computes ``name`` (imported on first use)."""
    module, cls = method(name).target.split(":")
    return getattr(importlib.import_module(module), cls)


def name_of(cls: type) -> str:
    """The registered name of a member class (or of the nearest registered class it
    derives from, for a user's subclass)."""
    for c in cls.__mro__:
        name = _BY_TARGET.get(f"{c.__module__}:{c.__qualname__}")
        if name is not None:
            return name
    return cls.__name__.lower()


def make(
    name: str, model: nn.Module, layer: str | None = None, **options: Any
) -> ActivationMapMethod:
    """An instance of method ``name`` on ``model`` with ``options`` (checked against
    the table).

    Raises:
        ValueError: unknown method, or an option it does not take.
    """
    check_options(name, [o for o in options if o != "on_step"])
    return method_class(name)(model, layer, **options)


def check_options(name: str, given: Sequence[str]) -> None:
    """Raise ``ValueError`` naming the options of ``given`` that ``name`` does not take,
    and the ones it takes."""
    row = method(name)
    unknown = set(given) - {o.name for o in row.options}
    if unknown:
        known = ", ".join(o.name for o in row.options) or "none"
        raise ValueError(f"{name} has no option {', '.join(sorted(unknown))}; its options: {known}")


def class_maps(
    model: nn.Module,
    x: torch.Tensor,
    top: int = 5,
    method: str = "cam",
    layer: str | None = None,
    classes: torch.Tensor | None = None,
    options: dict[str, Any] | None = None,
) -> ClassMaps:
    """Maps of ``x`` with ``method`` (a name of :data:`METHODS`: a CAM method or a
    pixel attribution) for the ``top`` most probable classes of each image, or for
    ``classes`` (``[N, T]``). ``options`` go to the method (a pixel attribution's
    ``steps``, ``baseline``, ...).

    Raises:
        NotGapHeadError: ``cam`` on a model without a GAP + linear head.
        ValueError: unknown method, option or layer, bad ``top`` or class index.
    """
    return make(method, model, layer, **(options or {}))(x, top=top, classes=classes)


def every_method(
    model: nn.Module,
    x: torch.Tensor,
    layer: str | None = None,
    classes: torch.Tensor | None = None,
    methods: Sequence[str] | None = None,
) -> dict[str, ClassMaps]:
    """The maps of every CAM-family method (or of ``methods``) for the top class of each
    image (or ``classes``, ``[N, T]``), in one layer; a method that needs a GAP + linear
    head is left out when the model has none (or ``layer`` is not the one feeding it),
    and so are the methods of tens of passes per channel (``in_all``)."""
    from convlens.interpret.heads import NotGapHeadError

    every = [m.name for m in METHODS if m.family == CAM and m.in_all]
    out = {}
    for name in methods if methods is not None else every:
        try:
            out[name] = make(name, model, layer)(x, top=1, classes=classes)
        except NotGapHeadError:
            if not method(name).needs_gap_head:
                raise
    return out


def explainer(
    model: nn.Module, method: str, layer: str | None = None, **options: Any
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``explain(x, target) -> [N, H, W]``: ``method``'s map (CAM family or pixel) of
    class ``target[i]`` for each image, upsampled and scaled to [0, 1], as the
    faithfulness table scores it."""
    maker = make(method, model, layer, **options)

    def explain(x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return maker(x, classes=target[:, None]).upsampled[:, 0]

    return explain


__all__ = [
    "CAM",
    "DEFAULT_ATTRIBUTION",
    "DEFAULT_METHOD",
    "FAMILIES",
    "GRADIENT_FALLBACK",
    "METHODS",
    "PIXEL",
    "REFINE_BASE",
    "REPORT_METHODS",
    "SANITY_METHODS",
    "SIGNS",
    "Method",
    "Option",
    "check_options",
    "class_list",
    "class_maps",
    "display_names",
    "every_method",
    "explainer",
    "flags",
    "layer_list",
    "make",
    "method",
    "method_class",
    "name_of",
    "names",
    "taken",
    "takers",
]
