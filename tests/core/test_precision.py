"""Reduced precision: every public analysis runs under bf16 autocast and answers in fp32;
``auto`` follows the measured table; a fewest-units set found in bf16 is checked in fp32.

bf16 is emulated where this CPU has no bf16 units (``emulate=True``): the arithmetic is
bf16's either way, only slower."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
import torch

from convlens.core import precision as prec
from convlens.interpret import ablation
from convlens.interpret.maps import registry
from tests.core.test_cuda import tensors
from tests.core.test_device import CASES
from tests.helpers import ROOT, fashion, tiny_gap_model

CPU = torch.device("cpu")


def conv_dtypes(model: torch.nn.Module) -> list[torch.dtype]:
    """The dtypes the model's first convolution outputs, call by call."""
    seen: list[torch.dtype] = []
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    conv.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    return seen


@pytest.mark.parametrize("analysis", list(CASES))
def test_every_public_analysis_runs_in_bf16_and_answers_in_fp32(analysis: str) -> None:
    model = tiny_gap_model().eval()
    seen = conv_dtypes(model)
    x = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    with prec.precision("bf16", CPU, emulate=True):
        answer = CASES[analysis](model, x)
    reduced = [
        t for t in tensors(answer).values() if t.is_floating_point() and t.dtype != torch.float32
    ]
    assert not reduced, [t.dtype for t in reduced]
    if analysis != "filter_tiles":  # the only one that runs no forward pass
        assert torch.bfloat16 in seen, seen


def test_outside_a_precision_block_nothing_changes() -> None:
    model = tiny_gap_model().eval()
    seen = conv_dtypes(model)
    CASES["class_maps gradcam"](model, torch.randn(2, 1, 28, 28))
    assert set(seen) == {torch.float32}
    assert prec.current("gradcam") == "fp32"
    with prec.reduced("gradcam", CPU):
        assert not torch.is_autocast_enabled("cpu")


def test_auto_runs_bf16_only_where_measured_and_the_hardware_has_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(prec, "BF16_AGREES", frozenset({"faithfulness"}))
    monkeypatch.setattr(prec, "cpu_has_fast_bf16", lambda: True)
    assert prec.resolve("auto", CPU, "faithfulness") == "bf16"
    assert prec.resolve("auto", CPU, "gradcam") == "fp32"
    assert prec.resolve("bf16", CPU, "gradcam") == "bf16"  # asked for: everything
    with prec.precision("auto", CPU), prec.reduced("faithfulness", CPU):
        assert torch.is_autocast_enabled("cpu")
        # an analysis that stays fp32, called from one in bf16, turns autocast off
        with prec.reduced("gradcam", CPU):
            assert not torch.is_autocast_enabled("cpu")
    monkeypatch.setattr(prec, "cpu_has_fast_bf16", lambda: False)
    assert prec.resolve("auto", CPU, "faithfulness") == "fp32"


def test_a_precision_without_hardware_is_refused_unless_emulated(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(prec, "cpu_has_fast_bf16", lambda: False)
    with pytest.raises(prec.PrecisionError, match="no bf16 units"):
        prec.check_precision("bf16", CPU)
    with pytest.raises(prec.PrecisionError, match="unknown `precision` 'fp8'"):
        prec.check_precision("fp8", CPU)
    prec.check_precision("bf16", CPU, emulate=True)
    prec.check_precision("auto", CPU)
    monkeypatch.setattr(prec, "cpu_has_fast_bf16", lambda: True)
    prec.check_precision("bf16", CPU)


def test_a_set_found_in_bf16_is_kept_only_when_it_flips_the_class_in_fp32() -> None:
    model, x, layer = fashion()
    x = x[:1]
    fp32 = ablation.fewest_units(model.eval(), x, layer)
    with prec.precision("bf16", CPU, emulate=True):
        bf16 = ablation.fewest_units(model, x, layer)
    assert fp32.found and bf16.found and bf16.precision in ("bf16", "fp32")
    with torch.no_grad(), ablation.ablated(model, bf16.layer, bf16.units, bf16.mode):
        after = model(x)[0]
    assert torch.equal(bf16.logits_after, after)  # fp32's logits, not bf16's
    assert int(after.argmax()) != bf16.original_class


def test_a_set_that_does_not_flip_in_fp32_is_searched_again_in_fp32(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The reduced-precision search is made to return a set that changes nothing; the
    answer is then fp32's own search."""
    model, x, layer = fashion()
    x = x[:1]
    fp32 = ablation.fewest_units(model.eval(), x, layer)
    c = fp32.original_class
    harmless = next(
        u for u in range(8) if int(ablation.ablate(model, x, layer, [u]).logits_after.argmax()) == c
    )
    search = ablation._fewest_units
    calls: list[bool] = []

    def wrong_in_bf16(*args: Any) -> ablation.FewestUnits:
        answer = search(*args)
        calls.append(torch.is_autocast_enabled("cpu"))
        if calls[-1]:
            return dataclasses.replace(answer, units=(harmless,), found=True)
        return answer

    monkeypatch.setattr(ablation, "_fewest_units", wrong_in_bf16)
    with prec.precision("bf16", CPU, emulate=True):
        again = ablation.fewest_units(model, x, layer)
    assert calls == [True, False]
    assert again.precision == "fp32" and again.units == fp32.units
    assert torch.equal(again.logits_after, fp32.logits_after)


def test_the_auto_table_is_the_committed_measurement() -> None:
    """:data:`BF16_AGREES` lists exactly the analyses that met every goal in the
    committed figures of ``benchmarks/precision_agreement.py``: on the CPU (emulated
    bf16, and a CPU's own bf16 units) and on a GPU's bf16 units (resnet50 at 224 px).
    An analysis agrees only if it
    agreed everywhere it was measured, and was measured where its goal is set: a map
    method on both models, the others on fashion-cnn (visualisation's goal is
    fashion-cnn's alone)."""
    rows = []
    for path in (
        "precision/agreement.json",
        "precision/agreement_bf16_units.json",
        "gpu/agreement_cuda.json",
    ):
        rows += json.loads((ROOT / "benchmarks/results" / path).read_text())["rows"]
    failed = {row["analysis"] for row in rows if not row["agrees"]}
    models: dict[str, set[str]] = {}
    for row in rows:
        models.setdefault(row["analysis"], set()).add(row["model"])
    needed = {a: {"fashion-cnn", "resnet50"} for a in registry.names()}
    passed = {a for a, seen in models.items() if needed.get(a, {"fashion-cnn"}) <= seen}
    methods = {m.name for m in registry.METHODS if m.bf16}
    assert passed - failed == prec.BF16_AGREES | methods
    assert not prec.BF16_AGREES & set(registry.names())  # each decided in one place
