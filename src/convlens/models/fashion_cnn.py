"""The FashionMNIST network convlens trains, and building it (or LeNet) from a config.

The default network ends in global average pooling followed by one linear layer, so a
class activation map is exact for it: ``logit_c = b_c + mean_{x,y} sum_k w_ck f_k(x,y)``.
"""

from __future__ import annotations

import torch
from torch import nn

from convlens.config import TrainConfig


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


def build_model(config: TrainConfig, num_classes: int = 10) -> nn.Module:
    """The network a config describes (``config.architecture``), initialised from
    ``config.seed``."""
    from convlens.models.lenet import LeNet

    with torch.random.fork_rng(devices=[]):  # PyTorch's default init draws from the global RNG
        torch.manual_seed(config.seed)
        model: nn.Module
        if config.architecture == "lenet":
            model = LeNet(num_classes)
        else:
            model = FashionCNN(config.widths, config.depth, num_classes, 1, config.dropout)
    init_weights(model, config.init, generator=torch.Generator().manual_seed(config.seed))
    return model


__all__ = [
    "ConvBlock",
    "FashionCNN",
    "build_model",
    "init_weights",
]
