"""Sanity checks: the layer randomisation, MPRT, sMPRT, eMPRT and the random-logit test
equal quantus 0.6.0's on the same explanation function, weights, noise and seeds; SSIM
equals scikit-image's; bad input is one line."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from convlens.interpret import sanity, similarity
from tests.helpers import fashion


def quantus_explainer(explain: sanity.Explain) -> Callable[..., np.ndarray]:
    """quantus's ``explain_func`` around a convlens explainer (its inputs as float32)."""

    def explain_func(
        model: nn.Module, inputs: np.ndarray, targets: np.ndarray, **_: object
    ) -> np.ndarray:
        x = torch.as_tensor(np.asarray(inputs, dtype=np.float32))
        maps = explain(model, x, torch.as_tensor(np.asarray(targets)).long())
        return maps[:, None].detach().numpy()

    return explain_func


@contextmanager
def quiet() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def test_randomised_layers_are_quantus_weights() -> None:
    from quantus.helpers.model.pytorch_model import PyTorchModel

    model, _, _ = fashion()
    wrapped = PyTorchModel(model, channel_first=True, softmax=False, device="cpu")
    theirs = wrapped.get_random_layer_generator(order="top_down", seed=42)
    before = torch.get_rng_state()
    last = None
    for (name, ours), (their_name, their_model) in zip(
        sanity.randomized_layers(model, "top_down", 42), theirs, strict=True
    ):
        assert name == their_name
        for (k, a), (_, b) in zip(
            ours.state_dict().items(), their_model.state_dict().items(), strict=True
        ):
            assert torch.equal(a, b), (name, k)
        last = {k: v.clone() for k, v in ours.state_dict().items()}
    torch.set_rng_state(before)  # quantus's generator seeds torch's global state
    # every layer at once: the last step of the cascade; the caller's random state is kept
    assert last is not None
    for k, v in sanity.fully_randomized(model, 42).state_dict().items():
        assert torch.equal(v, last[k]), k
    for _ in sanity.randomized_layers(model, "bottom_up", 42):
        pass
    assert torch.equal(torch.get_rng_state(), before)


@pytest.mark.parametrize("order", ["top_down", "bottom_up", "independent"])
def test_mprt_equals_quantus(order: str) -> None:
    import quantus

    model, x, _ = fashion()
    classes = torch.tensor([0, 3, 5, 9])
    explain = sanity.map_explainer("saliency")
    settings = sanity.RandomisationSettings(order=order, seed=42)
    ours = sanity.model_randomisation(model, x, classes, explain, settings)
    with quiet():
        metric = quantus.MPRT(layer_order=order, seed=42, disable_warnings=True,
                              display_progressbar=False)  # fmt: skip
        theirs = metric(model=model, x_batch=x.numpy(), y_batch=classes.numpy(), a_batch=None,
                        explain_func=quantus_explainer(explain), device="cpu")  # fmt: skip
    assert list(theirs)[1:] == list(ours.layers)
    for name, row in zip(ours.layers, ours.similarity["spearman_abs"], strict=True):
        assert np.allclose(row.numpy(), theirs[name], atol=1e-6), name


def test_smooth_mprt_equals_quantus() -> None:
    """sMPRT: the same noise from the same seed. quantus is given our smoothed maps of
    the trained network, so that its first draws smooth its own copy of them (its
    'original' score is then 1) and its later draws meet ours layer by layer. quantus's
    sMPRT explains the noisy inputs with ``quantus.explain``, not the ``explain_func``
    it is given: the method is captum's Saliency there, convlens's saliency here."""
    import quantus

    model, x, _ = fashion()
    classes = torch.tensor([1, 2, 7, 9])
    explain = sanity.map_explainer("saliency")
    settings = sanity.RandomisationSettings(order="bottom_up", seed=7, samples=4, keep=4)
    ours = sanity.model_randomisation(model, x, classes, explain, settings)
    assert ours.maps is not None
    with quiet():
        # normalise=False: its scaling leaves Spearman as it is, but rounds in float32
        metric = quantus.SmoothMPRT(layer_order="bottom_up", seed=7, nr_samples=4,
                                    normalise=False, disable_warnings=True,
                                    display_progressbar=False)  # fmt: skip
        np.random.seed(7)
        theirs = metric(model=model, x_batch=x.numpy(), y_batch=classes.numpy(),
                        a_batch=ours.maps[0][:, None].numpy(),
                        explain_func=quantus_explainer(explain),
                        explain_func_kwargs={"method": "Saliency"}, device="cpu")  # fmt: skip
    assert np.allclose(theirs["original"], 1.0, atol=1e-6)
    for name, row in zip(ours.layers, ours.similarity["spearman_abs"], strict=True):
        assert np.allclose(row.numpy(), theirs[name], atol=1e-6, equal_nan=True), name
    # the smoothing does something: one sample is plain MPRT, and differs
    plain = sanity.model_randomisation(
        model, x, classes, explain, sanity.RandomisationSettings(order="bottom_up", seed=7)
    )
    assert not torch.allclose(plain.last(), ours.last(), atol=1e-3)


def test_efficient_mprt_equals_quantus() -> None:
    import quantus

    model, x, _ = fashion()
    classes = torch.tensor([0, 3, 5, 9])
    for method in ("saliency", "gradcam"):
        explain = sanity.map_explainer(method)
        ours = sanity.efficient_randomisation(model, x, classes, explain, seed=42)
        with quiet():
            metric = quantus.EfficientMPRT(seed=42, disable_warnings=True,
                                           display_progressbar=False)  # fmt: skip
            theirs = metric(model=model, x_batch=x.numpy(), y_batch=classes.numpy(),
                            a_batch=None, explain_func=quantus_explainer(explain),
                            device="cpu")  # fmt: skip
        assert np.allclose(ours.numpy(), theirs, atol=1e-6), method


def test_entropy_rise_of_a_constant_map_is_undefined() -> None:
    """A map with one value (a Grad-CAM all zero after its ReLU) has no entropy to rise
    from: NaN, which the table's mean skips, not the infinity of the plain ratio."""
    trained = torch.stack([torch.zeros(8, 8), torch.rand(8, 8), torch.zeros(8, 8)])
    randomised = torch.stack([torch.rand(8, 8), torch.rand(8, 8), torch.zeros(8, 8)])
    rise = sanity.entropy_rise(trained, randomised)
    assert rise[0].isnan() and rise[1].isfinite() and rise[2].isnan()


def test_random_logit_equals_quantus() -> None:
    """With quantus's maps scaled image by image (its default scales by the batch's
    largest value, which makes an image's score depend on the others) and SSIM on the
    maps as images (its default flattens them into one row of pixels)."""
    import quantus

    model, x, _ = fashion()
    classes = torch.tensor([0, 3, 5, 9])
    for method in ("saliency", "gradcam"):
        explain = sanity.map_explainer(method)
        ours = sanity.random_logit(model, x, classes, explain, seed=3)

        def ssim_2d(a: np.ndarray, b: np.ndarray, batched: bool = True) -> list[float]:
            side = x.shape[-2:]
            pairs = torch.from_numpy(a).reshape(-1, *side), torch.from_numpy(b).reshape(-1, *side)
            return similarity.ssim(*pairs).double().tolist()

        with quiet():
            metric = quantus.RandomLogit(num_classes=10, seed=3, similarity_func=ssim_2d,
                                         normalise_func_kwargs={"normalise_axes": [1, 2, 3]},
                                         disable_warnings=True)  # fmt: skip
            theirs = metric(model=model, x_batch=x.numpy(), y_batch=classes.numpy(),
                            a_batch=None, explain_func=quantus_explainer(explain),
                            device="cpu")  # fmt: skip
        assert np.allclose(ours.numpy(), theirs, atol=1e-6), method
    others = sanity.other_classes(torch.arange(10).repeat(50), 10, seed=0)
    assert not bool((others == torch.arange(10).repeat(50)).any())
    assert set(others.tolist()) == set(range(10))


def test_ssim_equals_scikit_image_and_hog_is_its_features() -> None:
    from skimage.feature import hog
    from skimage.metrics import structural_similarity

    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(3, 28, 20, generator=g), torch.rand(3, 28, 20, generator=g)
    b[2] = a[2] * 2 - 0.5  # a related pair
    ours = similarity.ssim(a, b)
    for i in range(3):
        both = np.concatenate([a[i].numpy(), b[i].numpy()])
        theirs = structural_similarity(a[i].double().numpy(), b[i].double().numpy(),
                                       data_range=float(both.max() - both.min()))  # fmt: skip
        assert abs(float(ours[i]) - theirs) < 1e-6
    same = similarity.similarity(a, a, "hog")
    assert torch.allclose(same, torch.ones(3))
    features = similarity.hog_features(a[:1])
    assert np.allclose(features[0], hog(a[0].double().numpy(), pixels_per_cell=(5, 5)))
    hogs = similarity.similarity(a, b, "hog")
    assert float(hogs[2]) > float(hogs[0])


def test_bad_input_is_one_line() -> None:
    model, x, _ = fashion()
    with pytest.raises(ValueError, match="has no layer with parameters to randomise"):
        next(sanity.randomized_layers(nn.Sequential(nn.ReLU(), nn.Flatten())))
    with pytest.raises(ValueError, match="order must be one of top_down"):
        next(sanity.randomized_layers(nn.Linear(2, 2), "sideways"))
    with pytest.raises(ValueError, match="unknown method 'blur'"):
        sanity.map_explainer("blur")
    relu = next(n for n, m in model.named_modules() if isinstance(m, nn.ReLU))
    with pytest.raises(ValueError, match=f"layer '{relu}' has no parameters to randomise"):
        next(sanity.randomized_layers(model, layers=[relu]))
    with pytest.raises(ValueError, match="unknown similarity 'cosine'"):
        sanity.model_randomisation(
            model, x, torch.zeros(4).long(), sanity.map_explainer("saliency"),
            sanity.RandomisationSettings(measures=("cosine",)),
        )  # fmt: skip


def test_data_randomisation_compares_two_networks_maps() -> None:
    model, x, _ = fashion()
    classes = torch.tensor([0, 3, 5, 9])
    explain = sanity.map_explainer("gradcam")
    same = sanity.data_randomisation(model, model, x, classes, explain, ("spearman_abs", "ssim"))
    assert torch.allclose(same["spearman_abs"], torch.ones(4))
    assert torch.allclose(same["ssim"], torch.ones(4), atol=1e-6)
    other = sanity.data_randomisation(model, sanity.fully_randomized(model), x, classes, explain)
    assert float(other["spearman_abs"].nanmean()) < 0.9


def test_sanity_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from convlens.cli import main
    from tests.helpers import one_error_line

    out = tmp_path / "s"
    args = ["sanity", "fashion-cnn", "--limit", "4", "--methods", "gradcam", "guidedbackprop",
            "--measures", "spearman_abs", "hog", "--out", str(out)]  # fmt: skip
    assert main([*args, "--against", "fashion-cnn", "--image", "3"]) == 0
    found = json.loads((out / "sanity.json").read_text())
    rows = {r["method"]: r for r in found["methods"]}
    assert rows["gradcam"]["shuffled"]["spearman_abs"] == pytest.approx(1.0)  # the same network
    layers = rows["gradcam"]["layers"]
    assert layers[0] == "fc" and len(rows["gradcam"]["median"]["hog"]) == len(layers)
    for name in ("cascade.png", "similarity.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    assert "Guided Backprop" in (out / "sanity.md").read_text()
    capsys.readouterr()
    assert main([*args, "--image", "4"]) == 2
    assert "--image 4: give an index below --limit 4" in one_error_line(capsys)
    with pytest.raises(SystemExit):
        main(["sanity", "fashion-cnn", "--methods", "random"])  # not a map method
    assert "invalid choice: 'random'" in capsys.readouterr().err


@pytest.mark.parametrize("method", ["saliency", "integratedgradients", "guidedgradcam", "gradcam"])
def test_the_explainer_gives_class_maps_maps(method: str) -> None:
    """The explainer's shortcut for pixel attributions (no pass for the logits) gives the
    maps of ``class_maps``; a CAM's come bilinearly to the input's size."""
    import torch.nn.functional as F

    from convlens.interpret.maps import registry

    model, x, _ = fashion()
    classes = torch.tensor([0, 3, 5, 9])
    ours = sanity.map_explainer(method)(model.eval(), x, classes)
    maps = registry.class_maps(model, x, method=method, classes=classes[:, None]).maps
    want = F.interpolate(maps, size=(28, 28), mode="bilinear", align_corners=False)[:, 0]
    assert torch.allclose(ours, want, atol=1e-6)
