"""The later CAM members against their references on the acceptance's other sites
(issue 40): fashion-cnn's ``features.1`` and random resnet18 at 160 px (``layer4``),
top-3 classes of 2 images, after the same min-max scaling. Prints the largest difference
of each method (the goal: 1e-5). The same comparisons as
``tests/interpret/maps/test_cam_family.py``, at sizes that make them too slow for CI.

    uv run python benchmarks/cam_reference_sizes.py
"""

from __future__ import annotations

import torch
from tests.helpers import fashion
from tests.interpret.maps.test_cam_family import (
    GRAD_CAM,
    finer_reference,
    grad_cam_maps,
    refine_reference,
    top_classes,
    torchcam_maps,
)
from torchcam import methods as tcm

from convlens.interpret.maps import registry
from convlens.interpret.maps.base import normalize_maps
from convlens.models import places365

LATER = ("ablationcam", "eigengradcam", "gradcamelementwise", "kpcacam", "shapleycam")


def sites() -> dict[str, tuple[torch.nn.Module, torch.Tensor, str]]:
    model, x, _ = fashion()
    torch.manual_seed(0)
    big = places365.build("resnet18", num_classes=20).eval()
    return {
        "fashion-cnn features.1": (model, x[:2], "features.1"),
        "resnet18 160 px layer4": (big, torch.randn(2, 3, 160, 160), "layer4"),
    }


# Refine-CAM fuses the site's layer with finer ones: the shipped model's first stage
# (its first convolution's raw output makes Grad-CAM++ ill-conditioned), resnet18's
# stages before layer4 (its default)
REFINED = {"features.1": ("features.0", "features.1"), "layer4": ("layer2", "layer3", "layer4")}


def later_members(model: torch.nn.Module, x: torch.Tensor, layer: str, classes: torch.Tensor,
                  site: str) -> None:  # fmt: skip
    """Finer-CAM and Refine-CAM against both references."""
    ours = registry.make("finercam", model, layer)(x, classes=classes)
    theirs = finer_reference(model, layer, x, classes)
    print(f"{site}  finercam (pytorch-grad-cam): {gap(normalize_maps(ours.upsampled), theirs):.2e}")
    ours = registry.make("finercam", model, layer, reference="torchcam")(x, classes=classes)
    theirs = torchcam_maps(tcm.FinerCAM, model, layer, x, classes)
    print(f"{site}  finercam (torchcam): {gap(ours.normalized, normalize_maps(theirs)):.2e}")
    layers = REFINED[layer]
    ours = registry.make("refinecam", model, layers=layers)(x, classes=classes)
    theirs = refine_reference(model, layers, x, classes)
    print(
        f"{site}  refinecam (pytorch-grad-cam): {gap(normalize_maps(ours.upsampled), theirs):.2e}"
    )
    ours = registry.make("refinecam", model, layers=layers, reference="torchcam")(
        x, classes=classes
    )
    theirs = torchcam_maps(tcm.RefineCAM, model, list(layers), x, classes)
    print(f"{site}  refinecam (torchcam): {gap(ours.normalized, normalize_maps(theirs)):.2e}")


def gap(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    return float((ours - theirs).abs().max())


def main() -> None:
    for site, (model, x, layer) in sites().items():
        classes = top_classes(model, x)
        for name in LATER:
            ours = registry.make(name, model, layer)(x, classes=classes)
            theirs = grad_cam_maps(GRAD_CAM[name], model, layer, x, classes)
            worst = gap(normalize_maps(ours.upsampled), theirs)
            print(f"{site}  {name} (pytorch-grad-cam): {worst:.2e}")
        ours = registry.make("iscam", model, layer, samples=3)(x, classes=classes)
        theirs = torchcam_maps(tcm.ISCAM, model, layer, x, classes, num_samples=3)
        print(f"{site}  iscam (torchcam): {gap(ours.normalized, normalize_maps(theirs)):.2e}")
        for name, cls, opts, theirs_opts in (
            ("sscam", tcm.SSCAM, {"samples": 2, "stdev": 0.5, "seed": 7},
             {"num_samples": 2, "std": 0.5}),
            ("smoothgradcampp", tcm.SmoothGradCAMpp, {"samples": 3, "stdev": 0.2, "seed": 7},
             {"num_samples": 3, "std": 0.2}),
        ):  # fmt: skip
            ours = registry.make(name, model, layer, **opts)(x, classes=classes)
            worst = 0.0
            for t in range(classes.shape[1]):
                torch.manual_seed(7)
                one = torchcam_maps(cls, model, layer, x, classes[:, t : t + 1], **theirs_opts)
                worst = max(worst, gap(ours.normalized[:, t : t + 1], normalize_maps(one)))
            print(f"{site}  {name} (torchcam): {worst:.2e}")
        later_members(model, x, layer, classes, site)


if __name__ == "__main__":
    main()
