"""Networks convlens trains, and building them from a config.

The default FashionMNIST network ends in global average pooling followed by one
linear layer, so a class activation map is exact for it:
``logit_c = b_c + mean_{x,y} sum_k w_ck f_k(x,y)``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn

from convlens.config import TrainConfig
from convlens.fileio import load_checkpoint_file


class ConvBlock(nn.Module):
    """3x3 convolution (no bias), optional 2x2 max-pool, BatchNorm, ReLU.

    Pooling before BatchNorm and ReLU gives the same function as pooling after them
    whenever the BatchNorm scale is positive (both are monotone per channel), at a
    quarter of their cost: the ordering airbench uses.
    """

    def __init__(self, cin: int, cout: int, pool: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size=3, padding=1, bias=False)
        self.pool: nn.Module = nn.MaxPool2d(2) if pool else nn.Identity()
        self.bn = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.pool(self.conv(x))))


class FashionCNN(nn.Module):
    """A small VGG-style CNN: stages of 3x3 conv-BN-ReLU blocks, each stage but the
    last ending in a 2x2 max-pool, then global average pooling, dropout and one
    linear layer.

    Layer names are stable and readable: ``features.1.0`` is the first block of the
    second stage (``features.1.0.conv`` its convolution), ``pool`` the global
    pooling, ``fc`` the classifier. With three stages a 28x28 image gives 7x7 maps
    in the last stage.
    """

    def __init__(
        self,
        widths: tuple[int, ...] = (32, 64, 128),
        depth: tuple[int, ...] = (1, 2, 2),
        num_classes: int = 10,
        in_channels: int = 1,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        stages: list[nn.Module] = []
        cin = in_channels
        for i, (w, d) in enumerate(zip(widths, depth, strict=True)):
            last_stage = i == len(widths) - 1
            blocks = [
                ConvBlock(cin if j == 0 else w, w, pool=(j == d - 1 and not last_stage))
                for j in range(d)
            ]
            stages.append(nn.Sequential(*blocks))
            cin = w
        self.features = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = torch.flatten(self.pool(x), 1)
        return self.fc(self.dropout(x))


def init_weights(model: nn.Module, scheme: str, generator: torch.Generator | None = None) -> None:
    """Initialise conv and linear weights in place.

    ``default`` keeps PyTorch's own initialisation; ``kaiming`` is He normal
    (fan_out, ReLU); ``xavier`` is Glorot uniform; ``orthogonal`` is orthogonal
    with ReLU gain. Biases are zeroed and BatchNorm is set to the identity for
    every scheme but ``default``.
    """
    if scheme == "default":
        return
    for m in model.modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            if scheme == "kaiming":
                nn.init.kaiming_normal_(
                    m.weight, mode="fan_out", nonlinearity="relu", generator=generator
                )
            elif scheme == "xavier":
                nn.init.xavier_uniform_(m.weight, generator=generator)
            elif scheme == "orthogonal":
                nn.init.orthogonal_(
                    m.weight, gain=nn.init.calculate_gain("relu"), generator=generator
                )
            else:
                raise ValueError(f"unknown init {scheme!r}")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def build_model(config: TrainConfig, num_classes: int = 10) -> FashionCNN:
    """The network a config describes, initialised from ``config.seed``."""
    with torch.random.fork_rng(devices=[]):  # PyTorch's default init draws from the global RNG
        torch.manual_seed(config.seed)
        model = FashionCNN(config.widths, config.depth, num_classes, 1, config.dropout)
    init_weights(model, config.init, generator=torch.Generator().manual_seed(config.seed))
    return model


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` (and every submodule) in evaluation mode, restoring each module's
    own ``training`` flag on exit, also when the body raises."""
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield model
    finally:
        for m, training in modes.items():
            m.training = training


# ----------------------------------------------------------------------------- loading

WEIGHTS_DIR = Path(__file__).parent / "weights"
SHIPPED = {"fashion-cnn": WEIGHTS_DIR / "fashion-cnn.pt"}


@dataclass(frozen=True)
class LoadedModel:
    """A model ready for inference, with what is needed to feed and read it."""

    model: nn.Module
    name: str
    classes: tuple[str, ...]
    preprocessing: dict[str, Any]
    config: TrainConfig | None = None
    metrics: dict[str, Any] = field(default_factory=dict)


def known_names() -> list[str]:
    from convlens import places365

    return [*SHIPPED, *places365.ARCHS, "torchvision:NAME"]


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
            (torchvision's default weights from the local torch cache).
        weights: for Places365 and torchvision models, a checkpoint file to use
            instead of the cache (offline use); ``"none"`` for torchvision gives
            random weights.
        progress: show download progress bars.

    Raises:
        ValueError: unknown name, missing or unreadable file, or a file of another kind.
    """
    from convlens import places365

    key = str(name_or_path)
    if key in places365.ARCHS:
        return _load_places365(key, weights, progress)
    if key.startswith("torchvision:"):
        return _load_torchvision(key, weights)
    if weights is not None:
        raise ValueError("--weights applies to places365-* and torchvision:* models only")
    if key in SHIPPED:
        path = SHIPPED[key]
        if not path.is_file():
            raise ValueError(
                f"the shipped weights {path} are missing from this installation; reinstall "
                "convlens or train them with `make weights`"
            )
    else:
        path = Path(key)
        if path.is_dir():
            if (path / "model.pt").is_file():
                path = path / "model.pt"
            elif (path / "checkpoint.pt").is_file():
                path = path / "checkpoint.pt"
            else:
                raise ValueError(f"{path} is a folder without model.pt or checkpoint.pt")
        elif not path.exists():
            raise ValueError(
                f"unknown model {key!r}: not a file or folder; known names: "
                + ", ".join(known_names())
            )
    record = load_checkpoint_file(path)
    fmt = record.get("format")
    if fmt not in ("convlens.model", "convlens.checkpoint"):
        raise ValueError(f"{path} is not a convlens model or checkpoint (format {fmt!r})")
    config = TrainConfig.from_saved(record["config"])
    classes = tuple(record.get("classes", ()))
    model = build_model(config, num_classes=len(classes) if classes else 10)
    state = record["model"]
    metrics = dict(record.get("metrics") or {})
    if fmt == "convlens.checkpoint":  # an unfinished run: its latest epoch
        if record.get("average"):
            state = record["average"]["model"]
        history = record.get("metrics") or [{}]
        metrics = {"epochs": record.get("epoch"), "val_top1": history[-1].get("val_top1")}
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise ValueError(f"{path}: weights do not fit the configured network: {e}") from e
    model.eval()
    from convlens.data import CLASSES

    return LoadedModel(
        model=model,
        name=key,
        classes=classes or CLASSES,
        preprocessing=record.get("preprocessing", {}),
        config=config,
        metrics=metrics,
    )


def _load_places365(
    name: str, weights: str | os.PathLike[str] | None, progress: bool
) -> LoadedModel:
    from convlens import places365

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
        preprocessing=dict(places365.PREPROCESSING),
    )


def _load_torchvision(key: str, weights: str | os.PathLike[str] | None) -> LoadedModel:
    import torchvision

    from convlens.images import IMAGENET_PREPROCESSING

    arch = key.removeprefix("torchvision:")
    available = torchvision.models.list_models(module=torchvision.models)
    if arch not in available:
        close = [a for a in available if arch.lower() in a][:5]
        raise ValueError(
            f"unknown torchvision model {arch!r}"
            + (f"; did you mean {', '.join(close)}?" if close else "")
            + f" ({len(available)} classification models, e.g. resnet18, vgg16, densenet121)"
        )
    preprocessing: dict[str, Any] = dict(IMAGENET_PREPROCESSING)
    model = torchvision.models.get_model(arch, weights=None)
    if weights is not None and str(weights) == "none":
        categories = None
    else:
        enum = torchvision.models.get_model_weights(arch).DEFAULT
        categories = enum.meta.get("categories")
        transforms = enum.transforms()
        for attr, field_name in (("resize_size", "resize"), ("crop_size", "crop")):
            value = getattr(transforms, attr, None)
            if value:
                preprocessing[field_name] = int(value[0])
        for attr in ("mean", "std"):
            if getattr(transforms, attr, None) is not None:
                preprocessing[attr] = list(getattr(transforms, attr))
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
                    "--weights FILE, or --weights none for random weights"
                )
        record = load_checkpoint_file(path)
        load_state(model, record.get("state_dict", record), str(path))
    model.eval()
    if not categories:
        categories = [f"class {i}" for i in range(_num_outputs(model))]
    classes = tuple(categories)
    return LoadedModel(model=model, name=key, classes=classes, preprocessing=preprocessing)


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


def _num_outputs(model: nn.Module) -> int:
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return linears[-1].out_features if linears else 0
