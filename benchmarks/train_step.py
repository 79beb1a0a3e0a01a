"""Time one training step of the default network, as shipped and with two rewrites of
its pooling that a profile suggested, to see whether either would make training faster.

- ``shipped``: the network as ``convlens train`` builds it (bf16 autocast, channels-last).
- ``mean-head``: the global pooling as ``x.mean((2, 3))`` instead of
  ``AdaptiveAvgPool2d(1)``, whose backward hands the last ReLU an NCHW gradient while
  everything else is channels-last (``threshold_backward`` and a copy run slowly there).
- ``where-maxpool``: the 2x2 max-pools as a tensor-code function whose backward writes the
  input gradient in one ``torch.where`` instead of a zero fill and a scatter.
- ``fp32`` (``--variants fp32``): the shipped network without bf16 autocast, for CPUs
  without native bf16, where ``precision auto`` trains in fp32.

Variants are timed in turns (``--rounds`` times each) so that drift in the machine's speed
hits them alike; prints the median milliseconds per step at 28 px and 20 px. Synthetic
inputs: the time of a step does not depend on the pixels.

    uv run python benchmarks/train_step.py --threads 2
    uv run python benchmarks/train_step.py --variants fp32 --batch 90   # bf16 against fp32
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from convlens.config import TrainConfig
from convlens.core.device import keep_freed_memory
from convlens.models.fashion_cnn import build_model


class MeanPool(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean((2, 3), keepdim=True)


class WhereMaxPool(torch.autograd.Function):
    """2x2 max-pool of a channels-last batch of even side; ties share the gradient."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        n, c, h, w = x.shape
        v = x.permute(0, 2, 3, 1).reshape(n, h // 2, 2, w // 2, 2, c)
        top = torch.maximum(v[:, :, 0, :, 0], v[:, :, 0, :, 1])
        m = torch.maximum(top, torch.maximum(v[:, :, 1, :, 0], v[:, :, 1, :, 1]))
        ctx.save_for_backward(v, m)
        return m.permute(0, 3, 1, 2)

    @staticmethod
    def backward(ctx, g: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        v, m = ctx.saved_tensors
        n, h2, _, w2, _, c = v.shape
        gv = torch.where(v == m[:, :, None, :, None], g.permute(0, 2, 3, 1)[:, :, None, :, None], 0)
        return gv.view(n, 2 * h2, 2 * w2, c).permute(0, 3, 1, 2)


class WherePool(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return WhereMaxPool.apply(x)  # type: ignore[no-any-return]


def variant(name: str) -> nn.Module:
    model = build_model(TrainConfig())
    if name == "mean-head":
        model.pool = MeanPool()
    elif name == "where-maxpool":
        for module in model.modules():
            if isinstance(getattr(module, "pool", None), nn.MaxPool2d):
                module.pool = WherePool()
    return model.to(memory_format=torch.channels_last)


def stepper(model: nn.Module, size: int, batch: int, bf16: bool = True) -> Callable[[], None]:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 1, size, size, generator=g).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,), generator=g)

    def step() -> None:
        with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(model(x).float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5, help="turns per variant")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per turn")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument(
        "--variants",
        nargs="+",
        default=["shipped", "mean-head", "where-maxpool"],
        choices=("shipped", "mean-head", "where-maxpool", "fp32"),
        help="fp32: the shipped network without bf16 autocast (CPUs without native bf16)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    keep_freed_memory()  # as convlens train does on CPU
    names = ["shipped", *(n for n in args.variants if n != "shipped")]
    for size in (28, 20):
        steps = {n: stepper(variant(n), size, args.batch, bf16=n != "fp32") for n in names}
        times: dict[str, list[float]] = {n: [] for n in names}
        for _ in range(args.rounds):
            for n in names:
                for _ in range(3):  # warm up after the other variants ran
                    steps[n]()
                for _ in range(args.steps):
                    t = time.perf_counter()
                    steps[n]()
                    times[n].append(1000 * (time.perf_counter() - t))
        base = statistics.median(times["shipped"])
        for n in names:
            ms = statistics.median(times[n])
            print(f"{size} px  {n:14s} {ms:6.1f} ms/step  ({ms / base:.3f}x shipped)")


if __name__ == "__main__":
    main()
