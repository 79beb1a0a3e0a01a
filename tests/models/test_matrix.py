"""The coverage matrix: every public analysis on CNNs we did not write, 15 torchvision and
7 timm architectures with random weights at a small size, asserting the right answer
where there is one and a one-line error where there is not.

For each architecture (see README, "Your own CNN"):

- ``list_layers`` lists every convolution, with a shape unless it does not run in
  evaluation mode (Inception's and GoogLeNet's auxiliary heads);
- the default layer has spatial maps;
- CAM: the exact identity ``mean(map_c) + b_c = logit_c`` where the head is global
  average pooling + linear (functional pooling included) or 1x1 class maps + pooling
  (SqueezeNet), and a one-line :class:`NotGapHeadError` where it is not;
- Grad-CAM equals pytorch-grad-cam's on the same layer (run on a copy whose modules
  do not write in place, so that the reference reads true activations);
- unit maps, top units and region IoU read the layer's true output (the in-place test
  is ``tests/core/test_hooks.py``); ablation gives the closed-form logits on a CAM head (and
  the masked network's elsewhere); the fewest-units search is confirmed by a real
  ablation; dissection and its atlas, faithfulness, filters;
- the CLI's ``layers`` and ``cam`` answer with exit code 0.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from PIL import Image
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from convlens import list_layers, load_model
from convlens.cli import main
from convlens.core.hooks import hook_count
from convlens.data.images import box_mask
from convlens.data.sources import TensorSource
from convlens.interpret import ablation, dissect, faithfulness, filters, units
from convlens.interpret.heads import NotGapHeadError, default_layer, find_gap_head
from convlens.interpret.maps import registry
from convlens.interpret.maps.base import normalize_maps
from convlens.render.atlas import write_atlas


@dataclass(frozen=True)
class Arch:
    gap: bool  # the head is a CAM head (GAP + linear, or class maps + pooling)
    size: int = 96
    reference_layer: str | None = None  # for pytorch-grad-cam, when not the default


TORCHVISION = {
    "resnet18": Arch(gap=True),
    "resnet50": Arch(gap=True),
    "vgg11_bn": Arch(gap=False),  # a pooled 7x7 grid and three linear layers
    "alexnet": Arch(gap=False),
    # the features pass through a functional ReLU before pooling: no module gives the
    # tensor the linear layer averages; pytorch-grad-cam would read that ReLU's output
    "densenet121": Arch(gap=False, reference_layer="features.denseblock4"),
    "mobilenet_v2": Arch(gap=True),  # functional pooling
    "mobilenet_v3_small": Arch(gap=False),  # linear, hardswish, linear after pooling
    "efficientnet_b0": Arch(gap=True),
    "convnext_tiny": Arch(gap=False),  # LayerNorm after pooling
    "regnet_y_400mf": Arch(gap=True),
    "squeezenet1_1": Arch(gap=True),  # 1x1 conv class maps, then pooling
    "googlenet": Arch(gap=True),
    "inception_v3": Arch(gap=True, size=160),
    "shufflenet_v2_x0_5": Arch(gap=True),  # functional mean over the map
    "mnasnet0_5": Arch(gap=True),
}
TIMM = {
    "resnet18": Arch(gap=True),
    "efficientnet_b0": Arch(gap=True),
    "convnext_atto": Arch(gap=False),  # LayerNorm after pooling
    "mobilenetv3_small_050": Arch(gap=False),  # a 1x1 conv on the pooled features
    "regnety_002": Arch(gap=True),
    "densenet121": Arch(gap=True),  # timm's norm5 applies the activation inside
    "ghostnet_100": Arch(gap=False),  # a 1x1 conv on the pooled features
}
CASES = [f"torchvision:{a}" for a in TORCHVISION] + [f"timm:{a}" for a in TIMM]


def arch_of(name: str) -> Arch:
    source, arch = name.split(":")
    return (TORCHVISION if source == "torchvision" else TIMM)[arch]


def loaded(name: str):
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchvision's inception init note
        return load_model(name, weights="none")


def inputs(size: int, n: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 3, size, size, generator=g)


def without_inplace(model: nn.Module) -> nn.Module:
    """A copy whose modules compute out of place (``inplace`` attributes off)."""
    twin = copy.deepcopy(model)
    for m in twin.modules():
        if getattr(m, "inplace", False) is True:
            m.inplace = False
    return twin


def reference_grad_cam(model: nn.Module, layer: str, x: torch.Tensor, c: torch.Tensor):
    module = dict(model.named_modules())[layer]
    with GradCAM(model=model, target_layers=[module]) as extractor:
        targets = [ClassifierOutputTarget(int(k)) for k in c]
        return torch.from_numpy(extractor(input_tensor=x, targets=targets))


class Scaled(nn.Module):
    """``model``'s logits times ``scale``: the same normalised maps, larger raw ones."""

    def __init__(self, model: nn.Module, scale: float) -> None:
        super().__init__()
        self.model, self.scale = model, scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x) * self.scale


def comparable(model: nn.Module, layer: str, x: torch.Tensor, c: torch.Tensor) -> nn.Module:
    """``model``, or its logits scaled so that the raw Grad-CAM maps are about 1e-2:
    pytorch-grad-cam min-max scales with ``1e-7`` added to the range, which on random
    EfficientNet and GoogLeNet (raw maps near 1e-14) flattens its maps; ours divide by
    the range itself. Scaling the logits leaves both normalised maps as they are."""
    raw = registry.class_maps(model, x, method="gradcam", layer=layer, classes=c[:, None]).maps
    peak = float(raw.abs().max())
    return model if peak > 1e-2 or peak == 0 else Scaled(model, 1e-2 / peak)


@pytest.mark.slow
@pytest.mark.parametrize("name", CASES)
def test_every_analysis_on_architectures_we_did_not_write(name: str, tmp_path: Path) -> None:
    spec = arch_of(name)
    lm = loaded(name)
    model = lm.model
    x = inputs(spec.size)
    with torch.no_grad():
        logits = model(x)

    # layers: every convolution, a shape unless it does not run in evaluation mode
    rows = list_layers(model, x[:1])
    assert len(rows) == sum(isinstance(m, nn.Conv2d) for m in model.modules())
    silent = [r.name for r in rows if r.output_shape is None]
    assert all("aux" in n.lower() for n in silent), silent

    layer = default_layer(model, x)
    maps = units.feature_maps(model, x, layer)
    assert maps.ndim == 4 and maps.shape[2] * maps.shape[3] > 1

    # CAM: the exact identity where the head allows it, one line where it does not
    if spec.gap:
        head = find_gap_head(model, x)
        assert head.layer == layer
        r = registry.class_maps(model, x, top=3, method="cam")
        bias = head.bias[r.class_indices] if head.bias is not None else 0.0
        expected = logits.gather(1, r.class_indices)
        torch.testing.assert_close(r.maps.mean((2, 3)) + bias, expected, atol=2e-4, rtol=1e-4)
    else:
        with pytest.raises(NotGapHeadError) as e:
            registry.class_maps(model, x, method="cam")
        assert "\n" not in str(e.value) and "gradcam" in str(e.value)

    # Grad-CAM equals pytorch-grad-cam's on the same layer
    ref_layer = spec.reference_layer or layer
    top1 = logits.argmax(1)
    ours = registry.class_maps(model, x, method="gradcam", layer=ref_layer, classes=top1[:, None])
    big = comparable(without_inplace(model), ref_layer, x, top1)
    prefix = "model." if isinstance(big, Scaled) else ""
    theirs = reference_grad_cam(big, prefix + ref_layer, x, top1)
    torch.testing.assert_close(normalize_maps(ours.upsampled[:, 0]), theirs, atol=1e-4, rtol=0)

    # every method of the CAM family's default set (the gradient-based ones run
    # everywhere; those that need a GAP + linear head say so in one line elsewhere)
    for method in [*registry.names("cam", default_only=True), "smoothgradcampp"]:
        if registry.method(method).needs_gap_head and not spec.gap:
            continue
        r = registry.class_maps(model, x, method=method, layer=ref_layer, classes=top1[:, None])
        assert r.maps.shape[:2] == (2, 1) and torch.isfinite(r.maps).all(), method
        assert float(r.normalized.max()) <= 1 and r.upsampled.shape[2:] == x.shape[2:], method

    # units: maps, top units, region IoU on the layer's true output
    best = units.top_units(model, x, layer, top=3)
    um = units.unit_maps(model, x, layer, best.units[0].tolist())
    torch.testing.assert_close(um.maps[0], maps[0, best.units[0]])
    region = box_mask((0, 0, spec.size / 2, spec.size / 2), (spec.size, spec.size))
    match = units.match_region(model, x[:1], layer, region)
    assert len(match.iou) == maps.shape[1] and 0 <= float(match.iou.min()) <= 1

    # ablation changes the answer; the fewest units are confirmed by a real ablation
    removed = best.units[0, :2].tolist()
    a = ablation.ablate(model, x, layer, removed)
    if spec.gap:  # removing unit k lowers every logit by W[:, k] * mean(A_k), exactly
        drop = maps[:, removed].mean((2, 3)) @ head.weight[:, removed].T
        # float32 rounding: random inception_v3's logits reach 1e8, where the two sides
        # differ by 1.2e-4 relative (seen on the AMD machine)
        torch.testing.assert_close(a.logits_after, logits - drop, atol=2e-4, rtol=5e-4)
    else:
        keep = torch.ones(maps.shape[1], dtype=torch.bool)
        keep[removed] = False
        with torch.no_grad(), ablation.masked_channels(model, layer, keep):
            torch.testing.assert_close(a.logits_after, model(x), atol=1e-5, rtol=1e-5)
    few = ablation.fewest_units(model, x[:1], layer=layer, max_units=3, budget=20)
    if few.units:
        real = ablation.ablate(model, x[:1], layer, list(few.units))
        torch.testing.assert_close(real.logits_after[0], few.logits_after, atol=1e-4, rtol=1e-4)
        assert few.found == (int(real.logits_after.argmax()) != few.original_class)

    # dissection and its atlas, faithfulness, filters
    source = TensorSource(inputs(spec.size, 4), preprocessing=lm.preprocessing)
    d = dissect.dissect(model, source, layer, top=2, batch_size=4, progress=False)
    assert d.units == maps.shape[1]
    assert (tmp_path / "atlas" / "index.html") == write_atlas(
        d, source, tmp_path / "atlas", name, progress=False
    )
    scores = faithfulness.score_methods(model, [x], ["gradcam", "eigencam"], steps=4)
    assert all(0 <= s.deletion_auc <= 1 and s.images == 2 for s in scores)
    first_conv = next(n for n, m in model.named_modules() if isinstance(m, nn.Conv2d))
    assert filters.filter_tiles(model, first_conv, max_filters=4) is not None


@pytest.mark.slow
@pytest.mark.parametrize(
    "name", ["torchvision:shufflenet_v2_x0_5", "torchvision:mobilenet_v3_small"]
)
def test_the_perturbation_cams_on_architectures_we_did_not_write(name: str) -> None:
    """The CAM methods of many passes (masked, ablated, noisy or scaled copies) on a
    functional head with in-place activations: each equals its own run in one pass
    (batch_size 1 against the default) and the model comes back unchanged."""
    model = loaded(name).model
    x = inputs(64, 1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    few = {"iscam": {"samples": 2}, "sscam": {"samples": 1}}
    for method in registry.names("cam"):
        if registry.method(method).default or "batch_size" not in {
            o.name for o in registry.method(method).options
        }:
            continue
        options = few.get(method, {})
        r = registry.class_maps(model, x, top=1, method=method, options=options)
        assert torch.isfinite(r.maps).all() and r.maps.shape[:2] == (1, 1), method
        one = registry.class_maps(
            model, x, top=1, method=method, options={**options, "batch_size": 7}
        )
        # another batch size is another convolution algorithm: rounding of 1e-6 in the
        # logits, which Ablation-CAM divides by the logit (1.2e-4 seen on an AMD EPYC)
        torch.testing.assert_close(one.normalized, r.normalized, atol=5e-4, rtol=0)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert hook_count(model) == 0


@pytest.fixture(scope="module")
def photo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("img") / "photo.png"
    g = torch.Generator().manual_seed(0)
    Image.fromarray((torch.rand(120, 100, 3, generator=g) * 255).byte().numpy()).save(path)
    return path


@pytest.mark.slow
@pytest.mark.parametrize("name", CASES)
def test_the_cli_answers_on_every_architecture(
    name: str, photo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["layers", name, "--weights", "none"]) == 0
    out = tmp_path / "cam.png"
    argv = ["cam", name, "--weights", "none", str(photo), "--method", "gradcam", "--top", "2"]
    assert main([*argv, "--out", str(out)]) == 0
    assert out.is_file()
    err = capsys.readouterr().err
    assert "Traceback" not in err


@pytest.mark.slow
@pytest.mark.parametrize(
    "name",
    ["torchvision:resnet18", "torchvision:vgg11", "torchvision:convnext_tiny", "timm:resnet18"],
)
def test_concepts_and_tcav_on_architectures_we_did_not_write(name: str) -> None:
    """Concept discovery (positions and patches) and TCAV on the default layer of
    random-weight networks: a GAP head (the head's algebra) or not (the model's passes),
    ConvNeXt's signed activations shifted; every score finite and in range."""
    from convlens.interpret.concepts import discover, tcav

    model = loaded(name).model.eval()
    x = inputs(64, n=6)
    layer = default_layer(model, x[:1])
    labels = torch.tensor([0, 1, 0, 1, 0, 1])
    for patches in (None, 32):
        settings = discover.ConceptSettings(
            k=3, patches=patches, shift=True, top=2, designs=4, importance_images=2
        )
        found = discover.concepts(model, x, layer, labels, [0, 1], settings)
        for group in found.groups:
            assert group.bank.shape[0] == 3 and bool((group.bank >= 0).all())
            assert 0 <= group.error <= 1
            for part in (group.sobol, group.deletion, group.insertion, group.random_insertion):
                assert bool(torch.isfinite(part).all()), name
            assert bool(((group.insertion >= 0) & (group.insertion <= 1)).all())
    assert hook_count(model) == 0
    concepts = {"c": inputs(64, n=10) + 1.0}
    randoms = [inputs(64, n=10) * (1 + i) for i in range(2)]
    result = tcav.tcav(model, {0: x}, concepts, randoms, [layer], "fastcav")
    assert len(result.scores) == 1 and 0 <= result.scores[0].sign_count <= 1
