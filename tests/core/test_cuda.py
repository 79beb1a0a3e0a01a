"""Every public analysis on CUDA against the CPU (fp32, within 1e-4 relative), with the
inputs given on the CPU: the analysis runs where the model is and its answer comes back
to the CPU. Skipped where CUDA is absent (`benchmarks/gpu_check.sh` runs them)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import torch

from tests.core.test_device import CASES
from tests.helpers import tiny_gap_model

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here"),
]


def tensors(value: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    """Every tensor in an analysis's answer, by where it is."""
    if isinstance(value, torch.Tensor):
        return {prefix: value}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {k2: t for k, v in value.items() for k2, t in tensors(v, f"{prefix}.{k}").items()}
    if isinstance(value, (tuple, list)):
        return {
            k2: t for i, v in enumerate(value) for k2, t in tensors(v, f"{prefix}[{i}]").items()
        }
    return {}


@pytest.mark.parametrize("analysis", list(CASES))
def test_every_analysis_on_cuda_equals_the_cpu(analysis: str) -> None:
    torch.backends.cudnn.deterministic = True
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    x = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    on_cpu = CASES[analysis](tiny_gap_model().eval(), x)
    on_gpu = CASES[analysis](tiny_gap_model().eval().cuda(), x)
    cpu, gpu = tensors(on_cpu), tensors(on_gpu)
    assert cpu.keys() == gpu.keys()
    for name, a in cpu.items():
        b = gpu[name]
        assert b.device == a.device, f"{name} came back on {b.device}, not {a.device}"
        if a.is_floating_point():
            scale = float(a.abs().max()) if a.numel() else 0.0
            torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4 * max(scale, 1e-6))
        else:
            assert torch.equal(a, b), name


def test_counting_on_cuda_equals_bincount() -> None:
    """``counts`` scatter-adds on a GPU (no wait for the host) and gives bincount's
    answer."""
    from convlens.core.tensors import counts

    values = torch.randint(0, 50, (1000,), generator=torch.Generator().manual_seed(0))
    assert torch.equal(counts(values.cuda(), 64).cpu(), torch.bincount(values, minlength=64))


def test_bf16_on_cuda_answers_in_fp32() -> None:
    """Every analysis under bf16 autocast on CUDA answers in fp32, on the CPU."""
    from convlens.core.precision import precision

    if not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    for name, case in CASES.items():
        model = tiny_gap_model().eval().cuda()
        x = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(0))
        with precision("bf16", "cuda"):
            answer = tensors(case(model, x))
        wrong = {
            k: t.dtype
            for k, t in answer.items()
            if t.is_floating_point() and t.dtype != torch.float32
        }
        assert not wrong, (name, wrong)
