from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn
from torchvision.models import resnet18

from convlens import models
from convlens.config import TrainConfig
from convlens.core import hooks


@pytest.fixture
def net() -> nn.Module:
    return models.build_model(TrainConfig(widths=(4, 8, 16), depth=(1, 1, 2)))


def test_get_layer_and_unknown_name(net: nn.Module) -> None:
    assert isinstance(hooks.get_layer(net, "features.2.1.conv"), nn.Conv2d)
    with pytest.raises(
        ValueError,
        match=r"unknown layer 'features\.2\.1\.cnv'.*Did you mean "
        r"features\.2\.1\.conv.*Valid layers: features,",
    ):
        hooks.get_layer(net, "features.2.1.cnv")
    with pytest.raises(ValueError, match="unknown layer ''"):
        hooks.get_layer(net, "")


def test_capture_matches_manual_forward(net: nn.Module) -> None:
    x = torch.randn(2, 1, 28, 28)
    logits, acts = hooks.activations(net, x, ["features.0", "features.2"])
    net.eval()
    f0 = net.features[0](x)
    f2 = net.features[2](net.features[1](f0))
    assert torch.allclose(acts["features.0"], f0) and acts["features.2"].shape == (2, 16, 7, 7)
    assert torch.allclose(acts["features.2"], f2)
    assert torch.allclose(logits, net.fc(f2.mean((2, 3))), atol=1e-6)


def test_hooks_removed_and_mode_restored_on_error(net: nn.Module) -> None:
    net.train()
    with pytest.raises(RuntimeError, match="boom"), hooks.capture(net, "features.1"):
        assert hooks.hook_count(net) == 1
        raise RuntimeError("boom")
    assert hooks.hook_count(net) == 0
    hooks.activations(net, torch.randn(1, 1, 28, 28), "fc")
    assert hooks.hook_count(net) == 0 and net.training
    with pytest.raises(ValueError, match="unknown layer"):
        hooks.activations(net, torch.randn(1, 1, 28, 28), ["fc", "nope"])
    assert hooks.hook_count(net) == 0


def test_truncate_equals_captured_features(net: nn.Module) -> None:
    net.eval()
    x = torch.randn(3, 1, 28, 28)
    _, acts = hooks.activations(net, x, "features.1")
    assert torch.allclose(hooks.truncate(net, "features.1")(x), acts["features.1"])


def test_remove_last_layers_resnet50_shape() -> None:
    from torchvision.models import resnet50

    body = hooks.remove_last_layers(resnet50(), 2).eval()
    with torch.no_grad():
        assert body(torch.randn(1, 3, 256, 256)).shape == (1, 2048, 8, 8)
    with pytest.raises(ValueError, match="n must be in 1..9"):
        hooks.remove_last_layers(resnet18(), 10)


def test_conv_layer_names() -> None:
    names = hooks.conv_layer_names(resnet18())
    assert names[0] == "conv1" and "layer4.1.conv2" in names and "layer2.0.downsample.0" in names


# Architectures whose layers are followed by in-place operations: ReLU(inplace=True) after
# every BatchNorm and conv, ResNet's `out += identity`, densenet's functional relu_.
INPLACE_ARCHS = ["resnet18", "vgg11", "alexnet", "densenet121", "mobilenet_v2", "squeezenet1_1"]


@pytest.mark.parametrize("arch", INPLACE_ARCHS)
def test_captured_outputs_are_the_layers_outputs_as_returned(arch: str) -> None:
    """Every captured activation equals a copy taken the moment the layer returned, also
    where something after the layer writes its output in place."""
    import torchvision

    torch.manual_seed(0)
    model = getattr(torchvision.models, arch)(weights=None).eval()
    names = hooks.layer_names(model)
    truth: dict[str, torch.Tensor] = {}

    def keep_copy(
        name: str,
    ) -> Callable[..., None]:  # the reference: a copy at the moment of return
        def hook(_m: nn.Module, _i: tuple, out: torch.Tensor) -> None:
            if isinstance(out, torch.Tensor):
                truth[name] = out.detach().clone()

        return hook

    x = torch.randn(1, 3, 64, 64)
    handles = [hooks.get_layer(model, n).register_forward_hook(keep_copy(n)) for n in names]
    try:
        with torch.no_grad(), hooks.capture(model, names) as store:
            model(x)
    finally:
        for h in handles:
            h.remove()
    assert truth.keys() == store.keys()
    changed = [n for n in names if not torch.equal(store[n], truth[n])]
    assert not changed, f"{arch}: captured after an in-place change: {changed[:5]}"
    # and the model's answer is unchanged by the capture
    with torch.no_grad():
        assert torch.equal(model(x), hooks.activations(model, x, names)[0])
    assert hooks.hook_count(model) == 0


def test_frozen_restores_only_what_it_froze_also_on_error(net: nn.Module) -> None:
    params = list(net.parameters())
    params[0].requires_grad_(False)  # the user's own choice, kept
    before = [p.requires_grad for p in params]
    with pytest.raises(RuntimeError), hooks.frozen(net):
        assert not any(p.requires_grad for p in params)
        with hooks.frozen(net):  # nested (two explorer threads): the outer one restores
            pass
        assert not any(p.requires_grad for p in params)
        raise RuntimeError
    assert [p.requires_grad for p in params] == before


def test_frozen_gives_the_same_input_gradient_and_no_weight_gradient(net: nn.Module) -> None:
    net.eval()
    x = torch.randn(4, 1, 28, 28)

    def grad() -> torch.Tensor:
        xg = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(net(xg)[:, 3].sum(), xg)
        return g

    free = grad()
    with hooks.frozen(net):
        assert torch.equal(grad(), free)
        xg = x.clone().requires_grad_(True)
        net(xg).sum().backward()
    assert xg.grad is not None and all(p.grad is None for p in net.parameters())


@pytest.mark.parametrize("start_training", [True, False])
def test_eval_mode_restores_the_modes_whatever_the_body_does(
    net: nn.Module, start_training: bool
) -> None:
    net.train(start_training)
    before = [m.training for m in net.modules()]
    with pytest.raises(RuntimeError), hooks.eval_mode(net):
        assert not any(m.training for m in net.modules())
        net.train()  # the body changes the mode
        raise RuntimeError
    assert [m.training for m in net.modules()] == before
