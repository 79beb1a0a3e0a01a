from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from convlens.core.hooks import hook_count
from convlens.interpret.heads import NotGapHeadError, cam_all_classes, find_gap_head
from convlens.interpret.maps import registry
from convlens.interpret.maps.base import normalize_maps
from tests.helpers import tiny_gap_model


class FlattenHead(nn.Module):
    """Conv features flattened into a linear layer: no global average pooling."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3, padding=1)
        self.fc = nn.Linear(3 * 8 * 8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).flatten(1))


def test_find_gap_head_picks_the_feature_layer_not_the_pool() -> None:
    model = tiny_gap_model()
    head = find_gap_head(model, torch.randn(2, 1, 28, 28))
    assert head.layer == "features" and head.fc == "fc"
    assert torch.equal(head.weight, model.fc.weight)
    resnet = torchvision.models.resnet18(num_classes=7)
    assert find_gap_head(resnet, torch.randn(1, 3, 64, 64)).layer == "layer4"
    # An inner module returning the same tensor is accepted when named.
    assert find_gap_head(model, torch.randn(1, 1, 28, 28), "features.1").layer == "features.1"


def test_cam_equals_hand_computation() -> None:
    model = tiny_gap_model().eval()
    x = torch.randn(3, 1, 28, 28)
    out = registry.class_maps(model, x, top=5)
    feats = model.features(x)  # [3, 6, 14, 14]
    logits = model(x)
    assert torch.equal(out.class_indices, logits.topk(5, 1).indices)
    for n in range(3):
        for t in range(5):
            c = int(out.class_indices[n, t])
            expected = torch.zeros(14, 14)
            for k in range(6):
                expected += model.fc.weight[c, k] * feats[n, k]
            torch.testing.assert_close(out.maps[n, t], expected.detach(), atol=1e-5, rtol=1e-5)
    assert out.upsampled.shape == (3, 5, 28, 28)
    assert float(out.upsampled.min()) >= 0 and float(out.upsampled.max()) <= 1
    assert torch.allclose(out.probs.sum(1), torch.ones(3))


def test_cam_spatial_mean_plus_bias_is_the_logit() -> None:
    model = tiny_gap_model().eval()
    x = torch.randn(4, 1, 28, 28)
    head = find_gap_head(model, x)
    maps = cam_all_classes(model.features(x).detach(), head)  # [4, 5, 14, 14]
    assert head.bias is not None
    torch.testing.assert_close(
        maps.mean((2, 3)) + head.bias, model(x).detach(), atol=1e-5, rtol=1e-5
    )


def test_gradcam_on_gap_head_is_cam_up_to_scale() -> None:
    model = tiny_gap_model()
    x = torch.randn(2, 1, 28, 28)
    c = registry.class_maps(model, x, top=3, method="cam")
    g = registry.class_maps(model, x, top=3, method="gradcam")
    hw = c.maps.shape[2] * c.maps.shape[3]
    torch.testing.assert_close(g.maps, c.maps.clamp_min(0) / hw, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(g.normalized, normalize_maps(c.maps.clamp_min(0)))


def test_methods_leave_the_model_untouched() -> None:
    model = tiny_gap_model().train()
    for p in model.fc.parameters():
        p.requires_grad_(False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(2, 1, 28, 28)
    for method in ("cam", "gradcam"):
        registry.class_maps(model, x, method=method)
    assert model.training and all(m.training for m in model.modules())
    assert not model.fc.weight.requires_grad and model.features[0][0].conv.weight.requires_grad
    assert all(p.grad is None for p in model.parameters())
    assert hook_count(model) == 0
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN statistics too


def test_cam_refuses_a_head_without_global_pooling() -> None:
    model = FlattenHead()
    x = torch.randn(2, 1, 8, 8)
    with pytest.raises(NotGapHeadError, match="Grad-CAM"):
        registry.class_maps(model, x, method="cam")
    with pytest.raises(NotGapHeadError, match="has no nn.Linear"):
        find_gap_head(nn.Sequential(nn.Conv2d(1, 2, 3)), x)
    vgg = torchvision.models.vgg11(num_classes=3)
    with pytest.raises(NotGapHeadError, match="not global average pooling"):
        find_gap_head(vgg, torch.randn(1, 3, 32, 32))
    # Grad-CAM works on any conv layer of such a model; by default the last one.
    g = registry.class_maps(model, x, top=2, method="gradcam")
    assert g.layer == "conv" and g.maps.shape == (2, 2, 8, 8)
    assert hook_count(model) == 0


def test_gradcam_matches_a_manual_gradient() -> None:
    model = FlattenHead().eval()
    x = torch.randn(1, 1, 8, 8)
    g = registry.class_maps(model, x, top=1, method="gradcam", layer="conv")
    a = model.conv(x)
    a.retain_grad()
    logits = model.fc(torch.relu(a).flatten(1))
    logits[0, int(g.class_indices[0, 0])].backward()
    assert a.grad is not None
    weights = a.grad.mean((2, 3))[0]
    expected = torch.relu((weights[:, None, None] * a[0]).sum(0)).detach()
    torch.testing.assert_close(g.maps[0, 0], expected, atol=1e-6, rtol=1e-5)


def test_bad_arguments() -> None:
    model = tiny_gap_model()
    x = torch.randn(1, 1, 28, 28)
    with pytest.raises(ValueError, match="unknown method 'gradcam\\+\\+'"):
        registry.class_maps(model, x, method="gradcam++")
    with pytest.raises(ValueError, match="top must be in 1..5"):
        registry.class_maps(model, x, top=6)
    with pytest.raises(ValueError, match="unknown layer 'feature'. Did you mean features"):
        registry.class_maps(model, x, layer="feature")
    with pytest.raises(ValueError, match=r"\[N, C, H, W\]"):
        registry.class_maps(model, x[0])
    with pytest.raises(NotGapHeadError, match="features.0.0.conv"):
        find_gap_head(model, x, "features.0.0.conv")


def test_normalize_maps() -> None:
    m = torch.tensor([[[1.0, 3.0], [2.0, 5.0]], [[2.0, 2.0], [2.0, 2.0]]])
    out = normalize_maps(m)
    torch.testing.assert_close(out[0], torch.tensor([[0.0, 0.5], [0.25, 1.0]]))
    assert torch.equal(out[1], torch.zeros(2, 2))
    assert m[0, 0, 0] == 1.0  # input untouched
