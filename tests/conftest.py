from __future__ import annotations

import os

import pytest
import torch

from convlens.config import TrainConfig
from convlens.data import fashion_mnist as fm

# the local Ray clusters of the tests run their workers in this interpreter (see
# convlens.core.shards.connect), also when pytest runs under `uv run`
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `pytest -n 2` (as `make test` runs it): one thread per worker, not two each on two cores
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed_and_threads() -> None:
    torch.manual_seed(0)


@pytest.fixture
def tiny_config() -> TrainConfig:
    """A network and schedule small enough to train in a second, in exact fp32."""
    return TrainConfig(
        widths=(4, 8),
        depth=(1, 1),
        epochs=3,
        batch_size=32,
        lr=0.05,
        val_size=64,
        precision="fp32",
        device="cpu",
        tta=False,
        low_res=0.34,  # the first of 3 epochs on shrunk images, as the default does
        low_res_size=16,
        backprop_warmup=256,  # with selective backprop, the first epoch trains on everything
    )


@pytest.fixture
def tiny_data() -> tuple[fm.Dataset, fm.Dataset]:
    """256 training and 64 validation images of a learnable synthetic texture problem:
    class c shows stripes of width c % 5 + 1, horizontal for c < 5, vertical otherwise,
    at a random phase, plus noise."""
    g = torch.Generator().manual_seed(0)
    coords = torch.arange(28)

    def make(n: int) -> fm.Dataset:
        labels = torch.randint(0, 10, (n,), generator=g)
        phase = torch.randint(0, 10, (n,), generator=g)
        images = torch.randint(0, 60, (n, 1, 28, 28), generator=g, dtype=torch.uint8)
        for i, c in enumerate(labels.tolist()):
            on = ((coords + phase[i]) // (c % 5 + 1)) % 2 == 0
            stripes = on[:, None].expand(28, 28) if c < 5 else on[None, :].expand(28, 28)
            images[i, 0][stripes] += 150
        return fm.Dataset(images, labels)

    return make(256), make(64)
