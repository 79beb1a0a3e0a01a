"""The official Places365 CNNs of MIT CSAIL (github.com/CSAILVision/places365).

Checkpoints ``{arch}_places365.pth.tar`` hold a dict whose ``state_dict`` keys
carry the ``module.`` prefix of ``nn.DataParallel``, plus ``arch``. ``resnet18``
and ``resnet50`` are torchvision's architectures with 365 outputs; ``wideresnet18``
is CSAIL's variant: BasicBlock ``[2, 2, 2, 2]`` without the stem max-pool, so layer4
is 14x14 at 224x224 input (CSAIL's fixed ``AvgPool2d(14)`` is the global average
at that size; here it is ``AdaptiveAvgPool2d(1)``, identical at 224 and valid at
any size).
"""

from __future__ import annotations

import io
import os
import pickle
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from convlens.core.fileio import atomic_write_bytes, fetch_url, raise_if_unsafe, user_cache_dir
from convlens.data.images import IMAGENET_PREPROCESSING

if TYPE_CHECKING:
    from torchvision.models.resnet import ResNet

ARCHS = {
    "places365-resnet18": "resnet18",
    "places365-resnet50": "resnet50",
    "places365-wideresnet18": "wideresnet18",
}
WEIGHTS_URL = "http://places2.csail.mit.edu/models_places365/{arch}_places365.pth.tar"
CATEGORIES_URL = (
    "https://raw.githubusercontent.com/csailvision/places365/master/categories_places365.txt"
)
CATEGORIES_FILE = "categories_places365.txt"
NUM_CLASSES = 365
# The official demo (run_placesCNN_basic.py): Scale(256), CenterCrop(224), ImageNet stats.
PREPROCESSING = IMAGENET_PREPROCESSING


def wideresnet18(num_classes: int = NUM_CLASSES) -> ResNet:
    """CSAIL's WideResNet18: ResNet-18 blocks with no max-pool after the stem."""
    from torchvision.models.resnet import BasicBlock, ResNet  # torchvision is slow to import

    model = ResNet(BasicBlock, [2, 2, 2, 2], num_classes=num_classes)
    model.maxpool = nn.Identity()
    return model


def build(arch: str, num_classes: int = NUM_CLASSES) -> nn.Module:
    """An untrained network of ``arch`` (``resnet18``, ``resnet50``, ``wideresnet18``)."""
    from torchvision.models import resnet18, resnet50

    if arch == "resnet18":
        return resnet18(num_classes=num_classes)
    if arch == "resnet50":
        return resnet50(num_classes=num_classes)
    if arch == "wideresnet18":
        return wideresnet18(num_classes)
    raise ValueError(
        f"unknown Places365 architecture {arch!r}; use one of " + ", ".join(ARCHS.values())
    )


def read_checkpoint(
    path: str | os.PathLike[str], arch: str | None = None
) -> dict[str, torch.Tensor]:
    """The state dict of an official checkpoint, ``module.`` prefixes removed.

    Loads with ``weights_only=True``; both torch serialisations (zip and the legacy
    format the official files use) work.

    Raises:
        ValueError: missing file, an HTML page saved as a checkpoint, a truncated or
            corrupt file, a Python-2 pickle that cannot be read, a checkpoint of another
            architecture (its ``arch`` field), or no state dict inside.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"Places365 checkpoint {path} does not exist")
    with open(path, "rb") as f:
        head = f.read(512).lstrip().lower()
    if head.startswith((b"<!doctype", b"<html", b"<?xml", b"<head")):
        raise ValueError(
            f"{path} is an HTML page, not a checkpoint (a failed download saved an error "
            "page); delete it and download again, or pass the real file as `weights`"
        )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except UnicodeDecodeError:
        obj = _load_python2(path)
    except (EOFError, RuntimeError, pickle.UnpicklingError, OSError) as e:
        raise_if_unsafe(path, e)
        raise ValueError(
            f"{path} is truncated or corrupt ({type(e).__name__}: "
            f"{str(e).strip().splitlines()[0] if str(e).strip() else 'no detail'}); delete it "
            "and download it again"
        ) from e
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a dict checkpoint, found {type(obj).__name__}")
    found_arch = obj.get("arch")
    if arch is not None and isinstance(found_arch, str) and found_arch != arch:
        raise ValueError(
            f"{path} is a {found_arch} checkpoint, not {arch}; load it as places365-{found_arch}"
        )
    state = obj.get("state_dict", obj)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} holds no state_dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def save_checkpoint(
    net: nn.Module, arch: str, path: str | os.PathLike[str], legacy: bool = True
) -> Path:
    """Write ``net`` as CSAIL writes its checkpoints (atomically): a dict of ``epoch``,
    ``arch``, ``best_prec1`` and a ``state_dict`` whose keys carry ``module.``, in torch's
    legacy serialisation unless ``legacy`` is False. :func:`read_checkpoint` reads it
    back, as it reads the official files."""
    record = {
        "epoch": 90,
        "arch": arch,
        "state_dict": {"module." + k: v for k, v in net.state_dict().items()},
        "best_prec1": 0.0,
    }
    buffer = io.BytesIO()
    torch.save(record, buffer, _use_new_zipfile_serialization=not legacy)
    atomic_write_bytes(Path(path), buffer.getvalue())
    return Path(path)


def _load_python2(path: Path) -> Any:
    """Checkpoints pickled by Python 2 store byte strings; latin-1 decodes them losslessly."""
    try:
        with warnings.catch_warnings():
            # torch warns that pickle arguments need weights_only=False, yet its
            # weights-only unpickler does honour `encoding` (tested)
            warnings.filterwarnings("ignore", message="pickle_load_args only works")
            return torch.load(path, map_location="cpu", weights_only=True, encoding="latin1")
    except Exception as e:
        raise ValueError(
            f"{path} is a Python-2 pickle that could not be read even as latin-1 ({e}); "
            "re-save it with Python 3 (torch.save(torch.load(f, encoding='latin1'), g))"
        ) from e


def parse_categories(text: str, source: str = CATEGORIES_FILE) -> tuple[str, ...]:
    """Names from ``categories_places365.txt`` (lines like ``/a/airfield 0``): the path
    without its leading ``/x/``, sub-levels kept (``apartment_building/outdoor``)."""
    names: dict[int, str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit() or not parts[0].startswith("/"):
            raise ValueError(f"{source}:{n}: expected '/x/name index', got {line!r}")
        names[int(parts[1])] = parts[0][3:]
    if sorted(names) != list(range(NUM_CLASSES)):
        raise ValueError(
            f"{source}: expected indices 0..{NUM_CLASSES - 1}, found {len(names)} categories"
        )
    return tuple(names[i] for i in range(NUM_CLASSES))


def cache_dir() -> Path:
    return user_cache_dir() / "places365"


def ensure_file(path: Path, url: str, progress: bool = True) -> Path:
    """``path`` if it exists, else downloaded from ``url`` (atomically)."""
    if not path.is_file():
        atomic_write_bytes(path, fetch_url(url, progress=progress, desc=path.name))
    return path


def categories_for(weights: Path, progress: bool = True) -> tuple[str, ...]:
    """The category names from ``categories_places365.txt`` beside ``weights``
    (downloaded there when absent)."""
    path = ensure_file(weights.parent / CATEGORIES_FILE, CATEGORIES_URL, progress)
    return parse_categories(path.read_text(), str(path))


__all__ = [
    "ARCHS",
    "CATEGORIES_FILE",
    "CATEGORIES_URL",
    "NUM_CLASSES",
    "PREPROCESSING",
    "WEIGHTS_URL",
    "build",
    "cache_dir",
    "categories_for",
    "ensure_file",
    "parse_categories",
    "read_checkpoint",
    "save_checkpoint",
    "wideresnet18",
]
