"""Every CAM method equals its reference implementation (torchcam, pytorch-grad-cam),
for batches of images and several classes, after the same min-max normalisation."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from PIL import Image
from pytorch_grad_cam import (
    KPCA_CAM,
    AblationCAM,
    EigenCAM,
    EigenGradCAM,
    FinerCAM,
    GradCAM,
    GradCAMElementWise,
    GradCAMPlusPlus,
    HiResCAM,
    LayerCAM,
    RefineCAM,
    ScoreCAM,
    ShapleyCAM,
    XGradCAM,
)
from pytorch_grad_cam.utils.model_targets import ClassifierOutputReST, ClassifierOutputTarget
from torch import nn
from torchcam import methods as tcm

from convlens.cli import main
from convlens.core.hooks import hook_count
from convlens.interpret.maps import cam, registry
from convlens.interpret.maps.base import normalize_maps
from convlens.interpret.maps.refine_cam import NothingToRefineWarning, finer_layers
from convlens.models import places365
from tests.helpers import ROOT, fashion, official_checkpoint

TOL = 1e-5


def torchcam_maps(cls: type, model: nn.Module, layer: str, x: torch.Tensor, classes: torch.Tensor,
                  **kwargs: object) -> torch.Tensor:  # fmt: skip
    """torchcam's raw maps ``[N, T, h, w]`` (ReLU applied where the method has one)."""
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with cls(model, target_layer=layer, **kwargs) as extractor:
            for t in range(classes.shape[1]):
                scores = model(x)
                out.append(extractor(classes[:, t].tolist(), scores, normalized=False)[0])
    return torch.stack(out, 1).detach()


def grad_cam_maps(cls: type, model: nn.Module, layer: str, x: torch.Tensor,
                  classes: torch.Tensor) -> torch.Tensor:  # fmt: skip
    """pytorch-grad-cam's maps ``[N, T, H, W]``: ReLU, resized to the input, min-max."""
    module = dict(model.named_modules())[layer]
    out = []
    with cls(model=model, target_layers=[module]) as extractor:
        if hasattr(extractor, "batch_size"):
            extractor.batch_size = 64
        for t in range(classes.shape[1]):
            targets = [ClassifierOutputTarget(int(c)) for c in classes[:, t]]
            out.append(torch.from_numpy(extractor(input_tensor=x, targets=targets)))
    return torch.stack(out, 1)


def resnet18() -> tuple[nn.Module, torch.Tensor, str]:
    torch.manual_seed(0)
    return places365.build("resnet18", num_classes=20).eval(), torch.randn(2, 3, 96, 96), "layer4"


MODELS = {"fashion-cnn": fashion, "resnet18": resnet18}
TORCHCAM = {
    "gradcam": tcm.GradCAM,
    "xgradcam": tcm.XGradCAM,
    "layercam": tcm.LayerCAM,
    "scorecam": tcm.ScoreCAM,
}
GRAD_CAM = {
    "ablationcam": AblationCAM,
    "eigengradcam": EigenGradCAM,
    "gradcamelementwise": GradCAMElementWise,
    "gradcam": GradCAM,
    "gradcampp": GradCAMPlusPlus,
    "xgradcam": XGradCAM,
    "layercam": LayerCAM,
    "hirescam": HiResCAM,
    "scorecam": ScoreCAM,
    "eigencam": EigenCAM,
    "kpcacam": KPCA_CAM,
    "shapleycam": ShapleyCAM,
}


# Methods that run the model once per channel of the layer (and sample): on resnet18 they
# are compared at `layer3` (256 channels of 6 x 6, finer maps) rather than `layer4`
# (512 of 3 x 3), which doubled their time and their references'. Not Ablation-CAM: its
# weights (y - y_k) / y lose more float bits at `layer3`, 1.4e-5 from pytorch-grad-cam's.
PER_CHANNEL = ("scorecam", "iscam", "sscam")


def compared_layer(which: str, method: str, layer: str) -> str:
    return "layer3" if which == "resnet18" and method in PER_CHANNEL else layer


def top_classes(model: nn.Module, x: torch.Tensor, k: int = 3) -> torch.Tensor:
    with torch.no_grad():
        return model(x).topk(k, 1).indices


@pytest.mark.parametrize("which", list(MODELS))
@pytest.mark.parametrize(
    "method",
    [pytest.param(m, marks=pytest.mark.slow) if m == "scorecam" else m for m in TORCHCAM],
)
def test_equal_to_torchcam(which: str, method: str) -> None:
    model, x, layer = MODELS[which]()
    layer = compared_layer(which, method, layer)
    classes = top_classes(model, x)
    ours = registry.method_class(method)(model, layer)(x, classes=classes)
    theirs = torchcam_maps(TORCHCAM[method], model, layer, x, classes)
    torch.testing.assert_close(ours.normalized, normalize_maps(theirs), atol=TOL, rtol=0)
    assert hook_count(model) == 0


@pytest.mark.slow
@pytest.mark.parametrize("which", list(MODELS))
@pytest.mark.parametrize("method", list(GRAD_CAM))
def test_equal_to_pytorch_grad_cam(which: str, method: str) -> None:
    model, x, layer = MODELS[which]()
    layer = compared_layer(which, method, layer)
    classes = top_classes(model, x)
    options = {"reference": "pytorch-grad-cam"} if method == "scorecam" else {}
    ours = registry.method_class(method)(model, layer, **options)(x, classes=classes)
    theirs = grad_cam_maps(GRAD_CAM[method], model, layer, x, classes)
    # pytorch-grad-cam min-max scales after resizing to the input: do the same to ours
    torch.testing.assert_close(normalize_maps(ours.upsampled), theirs, atol=TOL, rtol=0)


@pytest.mark.parametrize("which", list(MODELS))
def test_grad_cam_pp_torchcam_variant(which: str) -> None:
    """torchcam's Grad-CAM++ divides a copy of alpha in place, so its weights are
    sum(g^2 relu(g)); reference="torchcam" reproduces that, the default follows the
    paper and pytorch-grad-cam, and the two differ."""
    model, x, layer = MODELS[which]()
    classes = top_classes(model, x)
    compat = cam.GradCAMpp(model, layer, reference="torchcam")(x, classes=classes)
    theirs = torchcam_maps(tcm.GradCAMpp, model, layer, x, classes)
    torch.testing.assert_close(compat.normalized, normalize_maps(theirs), atol=TOL, rtol=0)
    paper = cam.GradCAMpp(model, layer)(x, classes=classes)
    assert (paper.normalized - compat.normalized).abs().max() > 1e-2


@pytest.mark.slow
@pytest.mark.parametrize("which", list(MODELS))
def test_integrated_and_smoothed_score_cam_equal_torchcam(which: str) -> None:
    """IS-CAM is deterministic; SS-CAM draws its noise from a generator of ``seed`` in
    the order torchcam draws it from torch's global one (reseeded for each class, as
    torchcam draws again for each). On resnet18 with two classes (torchcam runs every
    channel's passes again for each class: at `layer4` with three this took 167 s)."""
    model, x, layer = MODELS[which]()
    layer = compared_layer(which, "iscam", layer)
    classes = top_classes(model, x, k=2 if which == "resnet18" else 3)
    ours = registry.make("iscam", model, layer, samples=3)(x, classes=classes)
    theirs = torchcam_maps(tcm.ISCAM, model, layer, x, classes, num_samples=3)
    torch.testing.assert_close(ours.normalized, normalize_maps(theirs), atol=TOL, rtol=0)
    ours = registry.make("sscam", model, layer, samples=2, stdev=0.5, seed=7)(x, classes=classes)
    for t in range(classes.shape[1]):
        torch.manual_seed(7)
        one = torchcam_maps(tcm.SSCAM, model, layer, x, classes[:, t : t + 1], num_samples=2,
                            std=0.5)  # fmt: skip
        torch.testing.assert_close(ours.normalized[:, t : t + 1], normalize_maps(one), atol=TOL,
                                   rtol=0)  # fmt: skip
    other = registry.make("sscam", model, layer, samples=2, stdev=0.5, seed=8)(x, classes=classes)
    assert not torch.equal(ours.maps, other.maps)


@pytest.mark.parametrize("which", list(MODELS))
def test_smooth_grad_cam_pp_equals_torchcam(which: str) -> None:
    """Smooth Grad-CAM++ draws its input noise from a generator of ``seed`` in the order
    torchcam draws it from torch's global one (reseeded for each class, as torchcam runs
    each class again), and like torchcam weighs the last noisy copy's activations."""
    model, x, layer = MODELS[which]()
    classes = top_classes(model, x)
    method = registry.make("smoothgradcampp", model, layer, samples=3, stdev=0.2, seed=5)
    ours = method(x, classes=classes)
    for t in range(classes.shape[1]):
        torch.manual_seed(5)
        one = torchcam_maps(tcm.SmoothGradCAMpp, model, layer, x, classes[:, t : t + 1],
                            num_samples=3, std=0.2)  # fmt: skip
        torch.testing.assert_close(ours.normalized[:, t : t + 1], normalize_maps(one), atol=TOL,
                                   rtol=0)  # fmt: skip
    other = registry.make("smoothgradcampp", model, layer, samples=3, stdev=0.2, seed=6)
    assert not torch.equal(ours.maps, other(x, classes=classes).maps)
    with pytest.raises(ValueError, match="`samples` must be at least 1, got 0"):
        registry.make("smoothgradcampp", model, layer, samples=0)


def test_score_cam_variants_differ_only_in_their_masks() -> None:
    model, x, layer = fashion()
    a = cam.ScoreCAM(model, layer)(x, top=2)
    b = cam.ScoreCAM(model, layer, reference="pytorch-grad-cam")(x, top=2)
    assert a.maps.shape == b.maps.shape and not torch.allclose(a.maps, b.maps)
    with pytest.raises(ValueError, match="`reference` must be"):
        cam.ScoreCAM(model, layer, reference="other")


def test_eigen_cam_is_the_same_for_every_class() -> None:
    model, x, layer = fashion()
    maps = cam.EigenCAM(model, layer)(x, top=3).maps
    assert torch.equal(maps[:, 0], maps[:, 2])


@pytest.mark.parametrize("method", list(registry.names()))
def test_every_method_leaves_the_model_as_it_was(method: str) -> None:
    model, x, layer = fashion()
    model.train()
    for p in model.fc.parameters():
        p.requires_grad_(False)
    frozen = [p.requires_grad for p in model.parameters()]
    out = registry.class_maps(
        model, x, top=2, method=method, layer=None if method == "cam" else layer
    )
    assert out.maps.shape[:2] == (4, 2) and torch.isfinite(out.normalized).all()
    assert model.training and [p.requires_grad for p in model.parameters()] == frozen
    assert hook_count(model) == 0 and all(p.grad is None for p in model.parameters())
    # Score-CAM runs a channels-last copy; the model's own weights keep their layout
    assert all(p.is_contiguous() for p in model.parameters())
    with pytest.raises(ValueError, match=r"class indices must be in 0..9"):
        registry.method_class(method)(model, layer)(x, classes=torch.full((4, 1), 10))
    assert hook_count(model) == 0 and model.training


def test_a_constant_map_is_zero_not_nan() -> None:
    model, x, layer = fashion()
    with torch.no_grad():
        model.fc.weight.zero_()  # every gradient is zero
    for method in ("gradcam", "gradcampp", "xgradcam", "layercam", "hirescam"):
        out = registry.method_class(method)(model, layer)(x, top=1)
        assert torch.equal(out.normalized, torch.zeros_like(out.normalized)), method


@pytest.mark.slow
def test_cam_cli_every_method_and_a_chosen_class(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    weights, _ = official_checkpoint(tmp_path, "resnet18")
    photo = tmp_path / "scene.png"
    Image.new("RGB", (64, 48), (90, 150, 230)).save(photo)
    base = ["cam", "places365-resnet18", str(photo), "--weights", str(weights)]
    out = tmp_path / "all.png"
    assert main([*base, "--method", "all", "--class", "3", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "CAM, Grad-CAM, Grad-CAM++, XGrad-CAM, LayerCAM, HiResCAM, Score-CAM, Eigen-CAM" in text
    assert out.read_bytes()[:4] == b"\x89PNG"
    assert main([*base, "--method", "layercam", "--class", "nowhere_at_all"]) == 2
    assert "--class 'nowhere_at_all' is not a class of this model" in capsys.readouterr().err
    assert main([*base, "--class", "999"]) == 2
    assert "the model has classes 0..364" in capsys.readouterr().err


@pytest.mark.parametrize("method", ["gradcampp", "scorecam", "eigencam"])
def test_a_layer_without_spatial_extent_is_a_clear_error(method: str) -> None:
    model, x, _ = fashion()
    with pytest.raises(ValueError, match=r"layer 'fc' outputs shape \(4, 10\), not \[N, C, h, w\]"):
        registry.class_maps(model, x, top=1, method=method, layer="fc")
    assert hook_count(model) == 0


class _EarlyLayer(nn.Module):
    """A 16-channel layer at the input's full resolution, then a GAP + linear head."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.fc = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)))


def test_eigen_cam_equals_the_full_svd_on_a_large_map() -> None:
    model, x = _EarlyLayer().eval(), torch.randn(2, 3, 80, 80)
    ours = cam.EigenCAM(model, "conv")(x, top=1).normalized[:, 0]
    theirs = grad_cam_maps(EigenCAM, model, "conv", x, torch.zeros(2, 1, dtype=torch.long))
    assert torch.allclose(ours, theirs[:, 0], atol=TOL)


@pytest.mark.slow
def test_eigen_cam_memory_grows_with_channels_times_positions() -> None:
    """One 224 x 224 map of 16 channels: a full SVD's U alone would take 10 GB."""
    code = (
        "import resource, torch\n"
        "from convlens.interpret.maps import cam\n"
        "from tests.interpret.maps.test_cam_family import _EarlyLayer\n"
        "model, x = _EarlyLayer().eval(), torch.randn(1, 3, 224, 224)\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "maps = cam.EigenCAM(model, 'conv')(x, top=1).maps\n"
        "assert maps.shape == (1, 1, 224, 224)\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)\n"
    )
    root = ROOT
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=root, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    grown_mb = int(done.stdout.split()[-1]) / 1024
    assert grown_mb < 500, f"Eigen-CAM on one 224 x 224 map grew the process by {grown_mb} MB"


def test_score_cam_runs_the_zero_image_once_for_all_dead_units() -> None:
    """Units that are zero everywhere (their BatchNorm shifted below the ReLU) give
    all-zero masks; Score-CAM runs that image once and still equals torchcam."""
    model, x, layer = fashion()
    bn = model.features[2][1].bn
    with torch.no_grad():
        bn.weight[:40] = 0
        bn.bias[:40] = -1.0  # 40 of 128 units dead for every input
    classes = top_classes(model, x)
    images: list[int] = []
    handle = model.register_forward_pre_hook(lambda _m, inp: images.append(inp[0].shape[0]))
    try:
        ours = cam.ScoreCAM(model, layer)(x, classes=classes)
    finally:
        handle.remove()
    with torch.no_grad():
        feats = model.features(x).flatten(2)
    live = int((feats.amax(2) > feats.amin(2)).sum())
    assert live <= x.shape[0] * (128 - 40)
    # one pass for the logits, then the live channels and one zero image
    assert sum(images) == x.shape[0] + live + 1
    theirs = torchcam_maps(tcm.ScoreCAM, model, layer, x, classes)
    torch.testing.assert_close(ours.normalized, normalize_maps(theirs), atol=TOL, rtol=0)


def test_kpca_cam_equals_pytorch_grad_cam_with_each_kernel() -> None:
    model, x, layer = fashion()
    classes = top_classes(model, x, 2)
    for kernel, options in [("rbf", {"gamma": 0.05}), ("poly", {}), ("cosine", {})]:
        ours = registry.make("kpcacam", model, layer, kernel=kernel, **options)(x, classes=classes)
        module = dict(model.named_modules())[layer]
        with KPCA_CAM(model=model, target_layers=[module], kernel=kernel, **options) as e:
            theirs = torch.from_numpy(e(input_tensor=x, targets=None))
        assert torch.equal(ours.maps[:, 0], ours.maps[:, 1])  # one map for every class
        torch.testing.assert_close(normalize_maps(ours.upsampled[:, 0]), theirs, atol=TOL, rtol=0)


@pytest.mark.parametrize("which", list(MODELS))
def test_shapley_cam_with_the_papers_rest_score_equals_pytorch_grad_cam(which: str) -> None:
    """With the logit, a network that is piecewise linear after the layer has no
    Hessian there and Shapley-CAM is Grad-CAM; with ReST (through a softmax) it is not."""
    model, x, layer = MODELS[which]()
    classes = top_classes(model, x)
    ours = registry.make("shapleycam", model, layer, objective="rest")(x, classes=classes)
    module = dict(model.named_modules())[layer]
    out = []
    with ShapleyCAM(model=model, target_layers=[module]) as extractor:
        for t in range(classes.shape[1]):
            targets = [ClassifierOutputReST(int(c)) for c in classes[:, t]]
            out.append(torch.from_numpy(extractor(input_tensor=x, targets=targets)))
    theirs = torch.stack(out, 1)
    torch.testing.assert_close(normalize_maps(ours.upsampled), theirs, atol=TOL, rtol=0)
    logit = registry.make("shapleycam", model, layer)(x, classes=classes)
    grad_cam = registry.make("gradcam", model, layer)(x, classes=classes)
    torch.testing.assert_close(logit.normalized, grad_cam.normalized, atol=TOL, rtol=0)
    assert (ours.normalized - grad_cam.normalized).abs().max() > 1e-2


FINER_BASES = {"gradcam": (GradCAM, tcm.GradCAM), "gradcampp": (GradCAMPlusPlus, tcm.GradCAMpp),
               "layercam": (LayerCAM, tcm.LayerCAM)}  # fmt: skip


def finer_reference(model: nn.Module, layer: str, x: torch.Tensor, classes: torch.Tensor,
                    base: type = GradCAM) -> torch.Tensor:  # fmt: skip
    """pytorch-grad-cam's Finer-CAM of each image's ``classes`` (one image per call, as
    its ``target_idx`` is one class for the batch)."""
    extractor = FinerCAM(model, [dict(model.named_modules())[layer]], base_method=base)
    return torch.stack([
        torch.cat([torch.from_numpy(extractor(x[i : i + 1], target_idx=int(classes[i, t])))
                   for i in range(x.shape[0])])
        for t in range(classes.shape[1])
    ], 1)  # fmt: skip


@pytest.mark.parametrize("which", list(MODELS))
@pytest.mark.parametrize("base", list(FINER_BASES))
def test_finer_cam_equals_both_references(which: str, base: str) -> None:
    """Each reference's contrast with the three classes nearest the target's logit:
    pytorch-grad-cam's probability-weighted one (alpha 1) and torchcam's mean (0.6)."""
    model, x, layer = MODELS[which]()
    classes = top_classes(model, x)
    ours = registry.make("finercam", model, layer, base=base)(x, classes=classes)
    theirs = finer_reference(model, layer, x, classes, FINER_BASES[base][0])
    torch.testing.assert_close(normalize_maps(ours.upsampled), theirs, atol=TOL, rtol=0)
    options = {"base": base, "reference": "torchcam"}
    ours = registry.make("finercam", model, layer, **options)(x, classes=classes)
    theirs = torchcam_maps(tcm.FinerCAM, model, layer, x, classes, base_method=FINER_BASES[base][1])
    torch.testing.assert_close(ours.normalized, normalize_maps(theirs), atol=TOL, rtol=0)
    # chosen comparison classes, as torchcam's comparison_idx
    chosen = [c for c in range(10) if c not in classes[:, 0].tolist()][:2]
    ours = registry.make("finercam", model, layer, compare_with=chosen, **options)(x, top=1)
    with tcm.FinerCAM(model, layer, base_method=FINER_BASES[base][1]) as extractor:
        scores = model(x)
        theirs = extractor(ours.class_indices[:, 0].tolist(), scores, comparison_idx=chosen,
                           normalized=False)[0][:, None].detach()  # fmt: skip
    torch.testing.assert_close(ours.normalized, normalize_maps(theirs), atol=TOL, rtol=0)


def refine_reference(model: nn.Module, layers: tuple[str, ...], x: torch.Tensor,
                     classes: torch.Tensor) -> torch.Tensor:  # fmt: skip
    modules = [dict(model.named_modules())[name] for name in layers]
    extractor = RefineCAM(model, modules, base_method=GradCAMPlusPlus)
    return torch.stack([
        torch.from_numpy(extractor(x, [ClassifierOutputTarget(int(c)) for c in classes[:, t]]))
        for t in range(classes.shape[1])
    ], 1)  # fmt: skip


@pytest.mark.parametrize("which", list(MODELS))
def test_refine_cam_equals_both_references(which: str) -> None:
    """Grad-CAM++ at each layer, scaled, resized and multiplied: pytorch-grad-cam at the
    input's size, torchcam at the finest layer's."""
    model, x, _ = MODELS[which]()
    classes = top_classes(model, x)
    # the shipped model's post-ReLU layers (Grad-CAM++ on a convolution's raw output,
    # which can be negative, is ill-conditioned where sum(A) g^3 nears -2 g^2)
    layers = (
        ("features.0", "features.1") if which == "fashion-cnn" else ("layer2", "layer3", "layer4")
    )
    ours = registry.make("refinecam", model, layers=layers)(x, classes=classes)
    assert ours.layer == ",".join(layers) and ours.maps.shape[2:] == x.shape[2:]
    theirs = refine_reference(model, layers, x, classes)
    torch.testing.assert_close(normalize_maps(ours.upsampled), theirs, atol=TOL, rtol=0)
    ours = registry.make("refinecam", model, layers=layers, reference="torchcam")(
        x, classes=classes
    )
    theirs = torchcam_maps(
        tcm.RefineCAM, model, list(layers), x, classes, base_method=tcm.GradCAMpp
    )
    torch.testing.assert_close(ours.normalized, normalize_maps(theirs), atol=TOL, rtol=0)


def test_refine_cam_fuses_the_layer_with_the_stages_before_it() -> None:
    model, x, layer = resnet18()
    assert finer_layers(model, x, layer) == ("layer2", "layer3", "layer4")
    assert finer_layers(model, x, "layer3", count=2) == ("layer2", "layer3")
    # 28 px: only the first convolution's raw output, never chosen; then the first stage
    model, x, layer = fashion()
    assert finer_layers(model, x, layer) == ("features.0", "features")
    assert registry.make("refinecam", model)(x, top=1).layer == "features.0,features"


def test_the_later_members_bad_options_are_one_line_each() -> None:
    model, x, layer = fashion()
    cases = [
        ("finercam", {"compare_with": [12]}, "comparison class 12 is out of range 0..9"),
        ("finercam", {"comparisons": 0}, "`comparisons` must be at least 1, got 0"),
        ("finercam", {"alpha": -1.0}, "`alpha` must be a number of 0 or more"),
        ("finercam", {"base": "scorecam"}, "Finer-CAM's base must be one of gradcam,"),
        ("kpcacam", {"kernel": "laplace"}, "unknown kernel 'laplace'; choose one of linear,"),
        ("kpcacam", {"gamma": 0.0}, "`gamma` must be a positive number, got 0.0"),
        (
            "shapleycam",
            {"objective": "prob"},
            "unknown objective 'prob'; choose one of logit, rest",
        ),
        ("refinecam", {"layers": ["features"]}, "Refine-CAM fuses two layers or more"),
        ("refinecam", {"layers": ["features", "nowhere"]}, "nowhere"),
        ("sscam", {"samples": 0}, "`samples` must be at least 1, got 0"),
    ]
    for method, options, message in cases:
        with pytest.raises(ValueError) as e:
            registry.make(method, model, layer, **options)(x, top=1)
        assert message in str(e.value) and "\n" not in str(e.value), (method, str(e.value))
    top = registry.make("gradcam", model, layer)(x, top=1).class_indices[0, 0]
    with pytest.raises(ValueError, match=f"class {int(top)} is both a target and a comparison"):
        registry.make("finercam", model, layer, compare_with=[int(top)])(x[:1], top=1)
    # by default, a layer with nothing finer before it is mapped alone, with a warning
    with pytest.warns(
        NothingToRefineWarning, match="no finer resolution before 'features.0.0.conv'"
    ):
        alone = registry.make("refinecam", model, "features.0.0.conv")(x, top=1)
    base = registry.make("gradcampp", model, "features.0.0.conv")(x, top=1)
    torch.testing.assert_close(alone.normalized, base.normalized, atol=1e-6, rtol=0)
