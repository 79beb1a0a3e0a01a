"""Loading the models convlens knows: its own runs and shipped weights, the official
Places365 CNNs, torchvision's classifiers and timm's models, each as a :class:`LoadedModel` that
carries what is needed to feed and read it."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn

from convlens.config import TrainConfig
from convlens.core.fileio import load_checkpoint_file
from convlens.core.hooks import eval_mode
from convlens.data import fashion_mnist as fm
from convlens.data.images import IMAGENET_PREPROCESSING, RESAMPLING, Preprocessing
from convlens.models.fashion_cnn import build_model
from convlens.models.formats import CHECKPOINT_FILE, CHECKPOINT_FORMAT, FORMATS, MODEL_FILE

# ----------------------------------------------------------------------------- loading

WEIGHTS_DIR = Path(__file__).parent / "weights"
SHIPPED = {"fashion-cnn": WEIGHTS_DIR / "fashion-cnn.pt"}


@dataclass(frozen=True)
class LoadedModel:
    """A model ready for inference, with what is needed to feed and read it."""

    model: nn.Module
    name: str
    classes: tuple[str, ...]
    preprocessing: Preprocessing
    config: TrainConfig | None = None
    metrics: dict[str, Any] = field(default_factory=dict)


def known_names() -> list[str]:
    from convlens.models import places365

    return [*SHIPPED, *places365.ARCHS, "torchvision:NAME", "timm:NAME"]


def load(
    name_or_path: str | os.PathLike[str],
    weights: str | os.PathLike[str] | None = None,
    *,
    progress: bool = True,
) -> LoadedModel:
    """Load a model convlens knows, in evaluation mode on the CPU.

    Args:
        name_or_path: ``fashion-cnn`` (the shipped checkpoint); a convlens run
            directory (its ``model.pt``, or ``checkpoint.pt`` while unfinished) or such
            a file; ``places365-resnet18``, ``places365-resnet50``,
            ``places365-wideresnet18`` (official CSAIL weights); ``torchvision:NAME``
            (torchvision's default weights from the local torch cache); ``timm:NAME``
            (timm's default pretrained weights from the local Hugging Face cache, with
            timm's own data config: mean, std, input size, interpolation, crop).
        weights: for Places365, torchvision and timm models, a checkpoint file to use
            instead of the cache (offline use; ``.safetensors`` too for timm);
            ``"none"`` for torchvision and timm gives random weights. For
            ``fashion-cnn``, a convlens model file or run directory to use instead of
            the shipped weights.
        progress: show download progress bars.

    Raises:
        ValueError: unknown name, missing or unreadable file, or a file of another kind.
    """
    from convlens.models import places365

    key = str(name_or_path)
    if key in places365.ARCHS:
        return _load_places365(key, weights, progress)
    if key.startswith("torchvision:"):
        return _load_torchvision(key, weights)
    if key.startswith("timm:"):
        return _load_timm(key, weights)
    if weights is not None and key in SHIPPED and str(weights) != "none":
        return _load_convlens(_convlens_file(str(weights)), key)
    if weights is not None:
        raise ValueError(
            "`weights` applies to places365-*, torchvision:*, timm:* and fashion-cnn (a "
            "convlens model file) only; give a run directory or model file as MODEL itself"
        )
    return _load_convlens(_convlens_file(key), key)


def _convlens_file(key: str) -> Path:
    """The model file that a shipped name, a run directory or a file name stands for."""
    if key in SHIPPED:
        path = SHIPPED[key]
        if not path.is_file():
            raise ValueError(
                f"the shipped weights {path} are missing from this installation; reinstall "
                "convlens or train them with `make weights`"
            )
        return path
    path = Path(key)
    if path.is_dir():
        for name in (MODEL_FILE, CHECKPOINT_FILE):  # finished, else its latest epoch
            if (path / name).is_file():
                return path / name
        raise ValueError(f"{path} is a folder without {MODEL_FILE} or {CHECKPOINT_FILE}")
    if not path.exists():
        raise ValueError(
            f"unknown model {key!r}: not a file or folder; known names: " + ", ".join(known_names())
        )
    return path


def _load_convlens(path: Path, name: str) -> LoadedModel:
    """A model that convlens trained, from its ``model.pt`` or ``checkpoint.pt``."""
    record = load_checkpoint_file(path)
    fmt = record.get("format")
    if fmt not in FORMATS:
        raise ValueError(f"{path} is not a convlens model or checkpoint (format {fmt!r})")
    config = TrainConfig.from_saved(record["config"])
    classes = tuple(record.get("classes", ()))
    model = build_model(config, num_classes=len(classes) if classes else 10)
    state = record["model"]
    metrics = dict(record.get("metrics") or {})
    if fmt == CHECKPOINT_FORMAT:  # an unfinished run: its latest epoch
        if record.get("average"):
            state = record["average"]["model"]
        history = record.get("metrics") or [{}]
        metrics = {"epochs": record.get("epoch"), "val_top1": history[-1].get("val_top1")}
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise ValueError(f"{path}: weights do not fit the configured network: {e}") from e
    model.eval()
    return LoadedModel(
        model=model,
        name=name,
        classes=classes or fm.CLASSES,
        preprocessing=Preprocessing.from_dict(
            record.get("preprocessing") or fm.PREPROCESSING.to_dict()
        ),
        config=config,
        metrics=metrics,
    )


def _load_places365(
    name: str, weights: str | os.PathLike[str] | None, progress: bool
) -> LoadedModel:
    from convlens.models import places365

    arch = places365.ARCHS[name]
    if weights is not None:
        path = Path(weights)
    else:
        path = places365.cache_dir() / f"{arch}_places365.pth.tar"
        places365.ensure_file(path, places365.WEIGHTS_URL.format(arch=arch), progress)
    model = places365.build(arch)
    load_state(model, places365.read_checkpoint(path, arch), str(path))
    model.eval()
    return LoadedModel(
        model=model,
        name=name,
        classes=places365.categories_for(path, progress),
        preprocessing=places365.PREPROCESSING,
    )


def _load_torchvision(key: str, weights: str | os.PathLike[str] | None) -> LoadedModel:
    import torchvision

    arch = key.removeprefix("torchvision:")
    available = torchvision.models.list_models(module=torchvision.models)
    if arch not in available:
        close = [a for a in available if arch.lower() in a][:5]
        raise ValueError(
            f"unknown torchvision model {arch!r}"
            + (f"; did you mean {', '.join(close)}?" if close else "")
            + f" ({len(available)} classification models, e.g. resnet18, vgg16, densenet121)"
        )
    preprocessing = IMAGENET_PREPROCESSING
    model = torchvision.models.get_model(arch, weights=None)
    if weights is not None and str(weights) == "none":
        categories = None
    else:
        enum = torchvision.models.get_model_weights(arch).DEFAULT
        categories = enum.meta.get("categories")
        transforms = enum.transforms()
        changes: dict[str, Any] = {}
        for attr, field_name in (("resize_size", "resize"), ("crop_size", "crop")):
            value = getattr(transforms, attr, None)
            if value:
                changes[field_name] = int(value[0])
        for attr in ("mean", "std"):
            if getattr(transforms, attr, None) is not None:
                changes[attr] = tuple(getattr(transforms, attr))
        preprocessing = preprocessing.replace(**changes)
        if weights is not None:
            path = Path(weights)
        else:
            url_name = Path(urlparse(enum.url).path).name
            path = Path(torch.hub.get_dir()) / "checkpoints" / url_name
            if not path.is_file():
                raise ValueError(
                    f"torchvision weights for {arch} are not in the local torch cache ({path}); "
                    f'fetch them on a connected machine with `python -c "import torchvision; '
                    f"torchvision.models.get_model('{arch}', weights='DEFAULT')\"`, pass "
                    "a file as `weights`, or 'none' as `weights` for random weights"
                )
        record = load_checkpoint_file(path)
        load_state(model, record.get("state_dict", record), str(path))
    model.eval()
    if not categories:
        categories = [f"class {i}" for i in range(_num_outputs(model, preprocessing))]
    classes = tuple(categories)
    return LoadedModel(model=model, name=key, classes=classes, preprocessing=preprocessing)


def _load_timm(key: str, weights: str | os.PathLike[str] | None) -> LoadedModel:
    """A timm model: random weights (``"none"``), a local file, or timm's default
    pretrained weights from the local Hugging Face cache (never downloaded here: timm's
    own download would hang offline); preprocessing from timm's data config."""
    try:
        import timm
    except ImportError as e:  # an optional install without timm
        raise ValueError("timm:* models need the timm package: pip install timm") from e

    arch = key.removeprefix("timm:")
    if not timm.is_model(arch):
        close = timm.list_models(f"*{arch}*")[:5] if arch else []
        raise ValueError(
            f"unknown timm model {arch!r}"
            + (f"; did you mean {', '.join(close)}?" if close else "")
            + " (see timm.list_models(), e.g. resnet50, efficientnet_b0, convnext_tiny)"
        )
    model = timm.create_model(arch, pretrained=False)
    categories: list[str] | None = None
    if weights is None or str(weights) != "none":
        path = Path(weights) if weights is not None else _timm_cached_file(model, arch)
        load_state(model, _read_weights(path), str(path))
        categories = _imagenet_names(model)
    model.eval()
    preprocessing = timm_preprocessing(model)
    if not categories or len(categories) != _num_outputs(model, preprocessing):
        categories = [f"class {i}" for i in range(_num_outputs(model, preprocessing))]
    return LoadedModel(
        model=model, name=key, classes=tuple(categories), preprocessing=preprocessing
    )


def timm_preprocessing(model: nn.Module) -> Preprocessing:
    """timm's evaluation transform for ``model`` as a :class:`Preprocessing`: shorter side
    to ``floor(size / crop_pct)`` with timm's interpolation, centre crop ``size``, then
    timm's mean and std (``timm.data.resolve_model_data_config``)."""
    import timm.data

    cfg = timm.data.resolve_model_data_config(model)
    channels, h, w = cfg["input_size"]
    if h != w:
        raise ValueError(f"timm's input size for this model is {h}x{w}; convlens needs square")
    crop_pct = float(cfg.get("crop_pct") or 1.0)
    interpolation = cfg.get("interpolation") or "bilinear"
    return Preprocessing(
        kind="timm",
        channels=int(channels),
        resize=math.floor(h / crop_pct),
        crop=int(h),
        mean=tuple(float(v) for v in cfg["mean"]),
        std=tuple(float(v) for v in cfg["std"]),
        interpolation=interpolation if interpolation in RESAMPLING else "bilinear",
    )


def _timm_cached_file(model: nn.Module, arch: str) -> Path:
    """The default pretrained weights of a timm model in the local Hugging Face cache."""
    from huggingface_hub import try_to_load_from_cache

    cfg = getattr(model, "pretrained_cfg", None) or {}
    repo = cfg.get("hf_hub_id")
    if repo:
        for filename in ("model.safetensors", "pytorch_model.bin"):
            found = try_to_load_from_cache(repo, filename)
            if isinstance(found, str):
                return Path(found)
    where = f"Hugging Face repository {repo}" if repo else "no Hugging Face repository"
    raise ValueError(
        f"timm weights for {arch} ({where}) are not in the local Hugging Face cache; fetch "
        f'them on a connected machine with `python -c "import timm; '
        f"timm.create_model('{arch}', pretrained=True)\"`, pass a file as `weights`, or "
        "'none' as `weights` for random weights"
    )


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from a ``.safetensors`` file or a PyTorch checkpoint (plain, or
    under ``state_dict`` / ``model``)."""
    if path.suffix == ".safetensors":
        if not path.is_file():
            raise ValueError(f"weights file {path} does not exist")
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as e:
            raise ValueError(f"{path} is not a readable safetensors file ({e})") from e
    record = load_checkpoint_file(path)
    for k in ("state_dict", "model"):
        if isinstance(record.get(k), dict):
            return dict(record[k])
    return dict(record)


def _imagenet_names(model: nn.Module) -> list[str] | None:
    """Short class names (``tench``) when timm knows the model's ImageNet label set."""
    from timm.data import ImageNetInfo, infer_imagenet_subset

    subset = infer_imagenet_subset(model)
    if not subset:
        return None
    return [d.split(",")[0].strip() for d in ImageNetInfo(subset).label_descriptions()]


def load_state(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """``load_state_dict`` with strict key and shape checks and a readable error."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = [
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (e.g. {', '.join(unexpected[:3])})")
        if wrong:
            parts.append(f"shape mismatches: {'; '.join(wrong[:3])}")
        raise ValueError(
            f"{source} does not fit the {type(model).__name__} architecture: "
            + ", ".join(parts)
            + "; is it the checkpoint of another model?"
        )
    model.load_state_dict(state, strict=True)


@torch.no_grad()
def _num_outputs(model: nn.Module, preprocessing: Preprocessing) -> int:
    """The number of classes: the width of the model's output for one blank input (the
    last layer need not be ``nn.Linear``: SqueezeNet's is a 1x1 conv, then pooling)."""
    with eval_mode(model):
        out = model(torch.zeros(1, preprocessing.channels, *preprocessing.input_size))
    return int(out.shape[-1])


__all__ = [
    "SHIPPED",
    "WEIGHTS_DIR",
    "LoadedModel",
    "known_names",
    "load",
    "load_state",
    "timm_preprocessing",
]
