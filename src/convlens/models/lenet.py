"""LeNet (LeCun et al., 1998) as the sanity-check literature trains it on FashionMNIST
(Hedström et al., 2024, through MetaQuantus): two 5x5 convolutions (6 and 16 channels,
the first padded to keep 28 px) each followed by ReLU and a 2x2 max-pool, then three
linear layers (400 -> 120 -> 84 -> classes).

Here every ReLU is an ``nn.ReLU`` module, so the methods that change the ReLU's backward
pass (Guided Backprop, Guided Grad-CAM) see them; MetaQuantus's LeNet calls
``torch.nn.functional.relu``, which they cannot see. The fully connected layer fixes the
input at 28 x 28 pixels.
"""

from __future__ import annotations

import torch
from torch import nn

SIDE = 28  # the only image side the first linear layer accepts


class LeNet(nn.Module):
    """Layers ``conv1``, ``conv2`` (Grad-CAM's layer in Hedström et al.), ``fc1``,
    ``fc2`` and ``fc3`` (the logits), with ``relu1``-``relu4`` and ``pool1``/``pool2``
    between them."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 6, kernel_size=5, padding=2)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(6, 16, kernel_size=5)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.relu3 = nn.ReLU()
        self.fc2 = nn.Linear(120, 84)
        self.relu4 = nn.ReLU()
        self.fc3 = nn.Linear(84, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (SIDE, SIDE):
            raise ValueError(
                f"LeNet takes {SIDE} x {SIDE} images, got {x.shape[-2]} x {x.shape[-1]}: "
                "resize them first"
            )
        x = self.pool1(self.relu1(self.conv1(x)))
        x = self.pool2(self.relu2(self.conv2(x)))
        x = self.relu3(self.fc1(torch.flatten(x, 1)))
        return self.fc3(self.relu4(self.fc2(x)))


__all__ = ["SIDE", "LeNet"]
