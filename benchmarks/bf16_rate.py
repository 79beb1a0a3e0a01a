"""The lever behind ``--precision bf16`` on this machine, in one run: resnet50 (random
weights) forward passes at 224 px, batch 8, in fp32, fp32 channels-last, and bf16
autocast channels-last, images per second (best of 3 after a warm-up), and what the CPU
has (AVX512-BF16, AMX). On a CPU without bf16 units autocast emulates bf16, which is why
the commands refuse ``--precision bf16`` there.

    uv run python benchmarks/bf16_rate.py --json benchmarks/results/precision/bf16_rate.json
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch
import torchvision

from convlens.core.device import machine_info
from convlens.core.fileio import atomic_write_json
from convlens.core.precision import cpu_has_fast_bf16
from timing import best_time


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    torch.manual_seed(0)
    model = torchvision.models.resnet50(weights=None).eval()
    last = torchvision.models.resnet50(weights=None).eval().to(memory_format=torch.channels_last)
    last.load_state_dict(model.state_dict())
    x = torch.randn(args.batch, 3, 224, 224)
    xl = x.contiguous(memory_format=torch.channels_last)

    def fp32() -> None:
        model(x)

    def fp32_last() -> None:
        last(xl)

    def bf16_last() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            last(xl)

    out: dict[str, Any] = {
        "machine": machine_info(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "bf16_units": cpu_has_fast_bf16(),
        "batch": args.batch,
    }
    with torch.inference_mode():
        for name, fn in (("fp32", fp32), ("fp32_channels_last", fp32_last),
                         ("bf16_channels_last", bf16_last)):  # fmt: skip
            seconds = best_time(fn, 3)
            out[f"{name}_images_per_s"] = args.batch / seconds
            print(f"{name}: {args.batch / seconds:.2f} images/s")
    print(f"{out['cpu_capability']}, bf16 units: {out['bf16_units']}")
    if args.json:
        atomic_write_json(args.json, out)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
