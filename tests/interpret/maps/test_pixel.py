"""Pixel attributions equal their references: captum for Saliency, Input x Gradient,
Integrated Gradients (every rule, baselines), SmoothGrad and Occlusion, and for the
infidelity and max-sensitivity metrics; pytorch-grad-cam for Guided Backprop and Guided
Grad-CAM. Within 1e-5 of the reference's scale, on the shipped fashion-cnn (one
channel) and a random-weight resnet18 (three channels, in-place ReLUs)."""

from __future__ import annotations

import warnings

import pytest
import torch
from captum.attr import (
    InputXGradient,
    IntegratedGradients,
    NoiseTunnel,
    Occlusion,
    Saliency,
)
from captum.metrics import infidelity, sensitivity_max
from pytorch_grad_cam import GradCAM, GuidedBackpropReLUModel
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from convlens import models
from convlens.cli import main
from convlens.core.hooks import hook_count
from convlens.data.sources import FashionSplit
from convlens.interpret import faithfulness
from convlens.interpret.maps import pixel, registry
from tests.helpers import needs_fashion, one_error_line

TOL = 1e-5


def fashion() -> tuple[nn.Module, torch.Tensor, str]:
    torch.manual_seed(0)
    return models.load("fashion-cnn").model.eval(), torch.randn(3, 1, 28, 28), "features"


def resnet18() -> tuple[nn.Module, torch.Tensor, str]:
    torch.manual_seed(0)
    lm = models.load("torchvision:resnet18", weights="none")
    return lm.model.eval(), torch.randn(2, 3, 64, 64), "layer4"


MODELS = {"fashion-cnn": fashion, "resnet18": resnet18}


def close(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    scale = float(theirs.detach().abs().max())
    assert scale > 0
    torch.testing.assert_close(ours, theirs, atol=TOL * scale, rtol=0)


def quiet(fn, *args, **kwargs):  # captum warns that inputs did not require gradients
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


@pytest.mark.parametrize("which", MODELS)
def test_gradient_methods_equal_captum(which: str) -> None:
    model, x, _ = MODELS[which]()
    t = torch.arange(1, x.shape[0] + 1)
    close(pixel.attribute(model, x, "saliency", t).attributions,
          quiet(Saliency(model).attribute, x, target=t))  # fmt: skip
    close(pixel.attribute(model, x, "inputxgradient", t).attributions,
          quiet(InputXGradient(model).attribute, x, target=t))  # fmt: skip
    ours = pixel.attribute(model, x, "smoothgrad", t, samples=6, stdev=0.3, seed=7, batch_size=5)
    torch.manual_seed(7)
    theirs = NoiseTunnel(Saliency(model)).attribute(
        x, nt_type="smoothgrad", nt_samples=6, stdevs=0.3, target=t
    )
    close(ours.attributions, theirs)
    assert hook_count(model) == 0


@pytest.mark.parametrize("which", MODELS)
@pytest.mark.parametrize("rule", pixel.RULES)
def test_integrated_gradients_equal_captum(which: str, rule: str) -> None:
    model, x, _ = MODELS[which]()
    t = torch.arange(x.shape[0])
    ours = pixel.attribute(
        model, x, "integratedgradients", t, rule=rule, steps=20, batch_size=7, tolerance=None
    )
    theirs = IntegratedGradients(model).attribute(x, target=t, n_steps=20, method=rule)
    if rule == "riemann_trapezoid":  # captum's weights sum to (steps - 1) / steps
        theirs = theirs * 20 / 19
    close(ours.attributions, theirs)


@pytest.mark.parametrize("which", MODELS)
def test_integrated_gradients_baselines_and_completeness(which: str) -> None:
    model, x, _ = MODELS[which]()
    t = torch.zeros(x.shape[0], dtype=torch.long)
    b = 0.1 * torch.randn_like(x)
    for baseline in (b, b[0], "blur"):
        ours = pixel.attribute(
            model, x, "integratedgradients", t, baseline=baseline, tolerance=None
        )
        ref = b if not isinstance(baseline, str) else pixel.baseline_image(x, "blur")
        theirs = IntegratedGradients(model).attribute(x, baselines=ref.expand_as(x), target=t)
        if isinstance(baseline, torch.Tensor) and baseline.ndim == 3:
            theirs = IntegratedGradients(model).attribute(x, baselines=b[:1], target=t)
        close(ours.attributions, theirs)
        assert ours.delta is not None and ours.gap is not None
        torch.testing.assert_close(ours.delta, ours.attributions.flatten(1).sum(1) - ours.gap)
    # completeness at the defaults: the attributions sum to f(x) - f(b) within 1%, the
    # images that miss it at 50 steps being integrated again with more
    fine = pixel.attribute(model, x, "integratedgradients", t, batch_size=256)
    assert fine.delta is not None and fine.gap is not None and fine.steps is not None
    within = fine.delta.abs() <= 0.01 * fine.gap.abs()
    assert (within | (fine.steps == 800)).all() and within.float().mean() >= 0.5
    torch.testing.assert_close(fine.delta, fine.attributions.flatten(1).sum(1) - fine.gap)


@pytest.mark.parametrize("which", MODELS)
@pytest.mark.slow
def test_occlusion_equals_captum(which: str) -> None:
    model, x, _ = MODELS[which]()
    t = torch.arange(x.shape[0])
    side = x.shape[-1]
    for k, stride in ((side // 7, side // 14), (side // 5, side // 9), (side // 4, side // 4)):
        # differences of logits: equal within 1e-5, the float rounding of the logits of
        # the same images in batches of other sizes (captum runs every image's window
        # at once, convlens every window of one image)
        c = x.shape[1]
        theirs = Occlusion(model).attribute(
            x, sliding_window_shapes=(c, k, k), strides=(c, stride, stride), target=t
        )
        for batch_size in (1, 50):
            ours = pixel.attribute(
                model, x, "occlusion", t, window=k, stride=stride, batch_size=batch_size
            )
            torch.testing.assert_close(ours.attributions, theirs, atol=TOL, rtol=0)
        assert float(theirs.abs().max()) > 100 * TOL


@pytest.mark.parametrize("which", MODELS)
def test_guided_methods_equal_pytorch_grad_cam(which: str) -> None:
    model, x, layer = MODELS[which]()
    t = torch.arange(x.shape[0])
    gb = pixel.attribute(model, x, "guidedbackprop", t).attributions
    ggc = pixel.attribute(model, x, "guidedgradcam", t, layer=layer).attributions
    assert hook_count(model) == 0
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    assert relus == [m for m in model.modules() if isinstance(m, nn.ReLU)]
    if which == "resnet18":  # torchvision's in-place ReLUs are in place again
        assert all(m.inplace for m in relus)
    reference = GuidedBackpropReLUModel(model=model, device="cpu")
    for i in range(x.shape[0]):
        theirs = torch.from_numpy(reference(x[i : i + 1].clone(), target_category=int(t[i])))
        theirs = theirs.permute(2, 0, 1)
        close(gb[i], theirs)
        module = dict(model.named_modules())[layer]
        with GradCAM(model=model, target_layers=[module]) as grad_cam:
            m = grad_cam(input_tensor=x[i : i + 1], targets=[ClassifierOutputTarget(int(t[i]))])
        close(ggc[i], theirs * torch.from_numpy(m[0])[None])


@needs_fashion
@pytest.mark.slow
def test_integrated_gradients_completeness_on_the_test_set() -> None:
    """At the defaults, nearly all of 60 test images are within 1% (FashionMNIST, fashion-cnn,
    both baselines); at captum's fixed 50 points about half are not."""
    model = models.load("fashion-cnn").model
    x = next(FashionSplit("test", limit=60).batches(60)).x
    for baseline in ("zeros", "blur"):
        r = pixel.attribute(model, x, "integratedgradients", baseline=baseline, batch_size=512)
        assert r.delta is not None and r.gap is not None
        assert (r.delta.abs() <= 0.01 * r.gap.abs()).float().mean() >= 0.97


def test_infidelity_and_sensitivity_equal_captum() -> None:
    model, x, _ = fashion()
    t = torch.tensor([1, 2, 3])
    attributions = pixel.attribute(model, x, "integratedgradients", t, steps=16).attributions

    def perturb(inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        noise = 0.1 * torch.randn(inputs.shape)
        return noise, inputs - noise

    for normalize in (False, True):
        torch.manual_seed(5)
        theirs = infidelity(model, perturb, x, attributions, target=t, normalize=normalize)
        torch.manual_seed(5)
        ours = faithfulness.infidelity(
            model, x, attributions, t, perturb=perturb, normalize=normalize
        )
        close(ours, theirs)
    # the default perturbation draws as captum's default does, from the seed
    torch.manual_seed(3)
    theirs = sensitivity_max(
        lambda inputs, target: quiet(Saliency(model).attribute, inputs, target=target),
        x, target=t,
    )  # fmt: skip
    explain = registry.explainer(model, "saliency")
    raw = lambda inputs, classes: pixel.attribute(model, inputs, "saliency", classes).attributions  # noqa: E731
    close(faithfulness.sensitivity_max(raw, x, t, seed=3), theirs)
    # and on the maps the faithfulness table scores
    maps = faithfulness.sensitivity_max(explain, x, t, seed=3)
    assert maps.shape == (3,) and (maps >= 0).all()


@pytest.mark.slow
def test_the_map_interface_and_the_faithfulness_table() -> None:
    """Pixel methods are map methods: same result type, scored in the same table."""
    from convlens.interpret.faithfulness import score_methods

    model, x, _ = fashion()
    for method in registry.names("pixel"):
        maps = registry.class_maps(model, x, top=2, method=method, options=None)
        assert maps.layer == "input" and maps.maps.shape == (3, 2, 28, 28)
        assert maps.upsampled.min() >= 0 and maps.upsampled.max() <= 1
    rows = score_methods(model, [x], ["gradcam", "integratedgradients", "occlusion", "random"],
                         captum_metrics=True)  # fmt: skip
    assert [r.method for r in rows] == ["gradcam", "integratedgradients", "occlusion", "random"]
    assert all(r.infidelity is not None and r.sensitivity is not None for r in rows)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"method": "integratedgradients", "steps": 0}, "`steps` must be at least 1"),
        ({"method": "integratedgradients", "baseline": torch.zeros(1, 2, 2)}, "baseline has shape"),
        ({"method": "occlusion", "window": 40}, "larger than the image"),
        ({"method": "occlusion", "window": 4, "stride": 9}, "stride must be in 1..4"),
        ({"method": "smoothgrad", "samples": 0}, "`samples` must be at least 1"),
        ({"method": "saliency", "steps": 5}, "saliency has no option steps"),
        ({"method": "lrp"}, "unknown method 'lrp'"),
    ],
)
def test_bad_input_is_one_line(kwargs: dict, message: str) -> None:
    model, x, _ = fashion()
    with pytest.raises(ValueError) as e:
        pixel.attribute(model, x, **kwargs)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_the_cli(tmp_path, capsys) -> None:
    out = tmp_path / "ig.png"
    assert main(["cam", "fashion-cnn", "test:0", "--method", "integratedgradients", "--steps", "16",
                 "--baseline", "blur", "--out", str(out)]) == 0  # fmt: skip
    assert out.read_bytes()[:4] == b"\x89PNG"
    capsys.readouterr()
    assert main(["cam", "fashion-cnn", "test:0", "--method", "integratedgradients", "--steps", "0",
                 "--out", str(tmp_path / "bad.png")]) == 2  # fmt: skip
    assert "--steps must be at least 1" in one_error_line(capsys)
    assert not (tmp_path / "bad.png").exists()


def test_the_old_name_target_still_works_for_one_release() -> None:
    """``classes`` names the class explained everywhere; ``target``, its old name in
    ``attribute``, ``infidelity``, ``sensitivity_max`` and ``Attribution``, still gives
    the same answer, with a DeprecationWarning."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(3)).eval()
    x = torch.randn(2, 1, 8, 8)
    model(x)
    t = torch.tensor([0, 2])
    new = pixel.attribute(model, x, "saliency", classes=t)
    with pytest.warns(DeprecationWarning, match="`target` is now called `classes`"):
        old = pixel.attribute(model, x, "saliency", target=t)
    torch.testing.assert_close(old.attributions, new.attributions, rtol=0, atol=0)
    with pytest.warns(DeprecationWarning, match="Attribution.classes"):
        assert old.target.tolist() == [0, 2]
    with pytest.warns(DeprecationWarning, match="infidelity"):
        old_i = faithfulness.infidelity(model, x, new.attributions, target=t)
    torch.testing.assert_close(old_i, faithfulness.infidelity(model, x, new.attributions, t))
    with pytest.raises(TypeError, match="give it alone"):
        faithfulness.infidelity(model, x, new.attributions, classes=t, target=t)


def test_guided_methods_warn_when_no_relu_module_can_be_guided() -> None:
    """A model whose ReLUs are functional (MetaQuantus's LeNet) gets the plain gradient
    from Guided Backprop, here and in pytorch-grad-cam and zennit: said, not silent."""

    class Functional(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3)
            self.fc = nn.Linear(4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(torch.relu(self.conv(x)).mean((2, 3)))

    model, x = Functional().eval(), torch.rand(2, 1, 8, 8)
    t = torch.tensor([0, 2])
    with pytest.warns(UserWarning, match="no nn.ReLU module"):
        gb = pixel.attribute(model, x, "guidedbackprop", t).attributions
    torch.testing.assert_close(gb, pixel.attribute(model, x, "inputxgradient", t).attributions / x)
    with pytest.warns(UserWarning, match="GuidedGradCAM: Functional has no nn.ReLU"):
        pixel.attribute(model, x, "guidedgradcam", t, layer="conv")
