"""Concept discovery: the factorisation is scikit-learn's NMF as craft-xai runs it, the
importance is craft-xai's on the same factorisation, the head's algebra equals the
model's passes, the most important concept beats a random direction, bad input is one
line."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from convlens import models
from convlens.cli import main
from convlens.data import fashion_mnist
from convlens.interpret.concepts import discover, sobol
from convlens.interpret.concepts.discover import ConceptSettings, NegativeActivationsError
from convlens.interpret.objectives import direction
from tests.helpers import needs_fashion, one_error_line


@pytest.fixture(scope="module")
def fashion_cnn() -> nn.Module:
    return models.load("fashion-cnn").model.eval()


@pytest.fixture(scope="module")
def test_images() -> tuple[torch.Tensor, torch.Tensor]:
    """The first 600 FashionMNIST test images, as model inputs, and their labels."""
    ds = fashion_mnist.load_fashion_mnist("test", download_missing=False)
    return fashion_mnist.to_float(ds.images[:600]), ds.labels[:600]


@pytest.fixture
def craft(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """craft-xai 0.0.3's PyTorch module. Its sampler module imports TensorFlow at the top
    for a sampler CRAFT's PyTorch code never uses (``TFSobolSequence``); TensorFlow is not
    installed beside the project, so that one import finds an empty module. Every line
    that runs (``Craft``, ``HaltonSequence``, ``JansenEstimator``) is craft-xai's own."""
    monkeypatch.setitem(sys.modules, "tensorflow", types.ModuleType("tensorflow"))
    for name in [m for m in sys.modules if m == "craft" or m.startswith("craft.")]:
        monkeypatch.delitem(sys.modules, name)
    import craft.craft_torch as craft_torch

    return craft_torch


def test_the_sobol_design_and_estimator_are_crafts(craft: types.ModuleType) -> None:
    from craft.sobol.estimators import JansenEstimator
    from craft.sobol.sampler import HaltonSequence

    masks = HaltonSequence()(6, nb_design=16)
    assert np.array_equal(sobol.design(6, 16).numpy(), masks)
    outputs = np.random.default_rng(0).normal(size=len(masks)).astype(np.float32)
    theirs = JansenEstimator()(masks, outputs, 16)
    ours = sobol.total_indices(torch.from_numpy(outputs), 6, 16)
    assert np.allclose(ours.numpy(), theirs, rtol=1e-5)


@needs_fashion
def test_importance_ranks_as_craft_xai_on_the_same_factorisation(
    craft: types.ModuleType,
    fashion_cnn: nn.Module,
    test_images: tuple[torch.Tensor, torch.Tensor],
) -> None:
    """Spearman >= 0.99 between our Sobol importance and craft-xai's ``estimate_importance``
    for two classes, with craft-xai given our concepts (its ``reducer``) and the model
    split at ``features`` (its ``g`` and ``h``)."""
    x, labels = test_images
    settings = ConceptSettings(k=10, importance_images=40)
    found = discover.concepts(fashion_cnn, x, "features", labels, [0, 7], settings)
    model = fashion_cnn
    for group in found.groups:
        extractor = craft.Craft(
            input_to_latent=model.features,
            latent_to_logit=lambda a: model.fc(model.pool(a).flatten(1)),
            number_of_concepts=10,
            device="cpu",
        )
        extractor.reducer = discover._fixed(group.bank)
        extractor.W = group.bank.numpy()
        c = group.group
        assert c is not None
        with pytest.warns(UserWarning):  # craft copies tensors with torch.tensor()
            theirs = extractor.estimate_importance(x[labels == c][:40], class_id=c)
        rho = stats.spearmanr(group.sobol[0].numpy(), theirs).statistic
        assert rho >= 0.99, (c, rho, group.sobol[0], theirs)
        assert np.allclose(group.sobol[0].numpy(), theirs, atol=2e-3)


def test_patches_factorise_as_craft_xai_fits(craft: types.ModuleType) -> None:
    """With patches, the crops, the factorisation and the concepts equal craft-xai's
    ``Craft.fit`` (RGB images: its fit assumes three channels)."""
    torch.manual_seed(0)
    g = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 24, 3, 2, 1),
                      nn.ReLU())  # fmt: skip
    model = nn.Sequential(g, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(24, 5)).eval()
    x = torch.rand(12, 3, 32, 32)
    extractor = craft.Craft(input_to_latent=g, number_of_concepts=4, patch_size=16, device="cpu")
    with pytest.warns(UserWarning):
        crops, _, w = extractor.fit(x)
    settings = ConceptSettings(k=4, patches=16, max_iter=200, importance_images=2, top=2)
    found = discover.concepts(model, x, "0", torch.arange(12) % 5, None, settings)
    patches, _ = discover.patch_inputs(x, 16)
    resized = torch.nn.functional.interpolate(crops, size=(32, 32), mode="bilinear")
    assert torch.equal(patches, resized)
    # the same NMF from activations that differ in float rounding (craft-xai runs ``g`` on
    # batches of 64 crops, the layer is read here in batches of 256); 200 coordinate-descent
    # steps carry that to about 1e-5 (two fits by craft-xai itself differ by 5e-5)
    assert np.abs(found.groups[0].bank.numpy() - w).max() < 2e-4 * np.abs(w).max() + 1e-4


@needs_fashion
def test_the_heads_algebra_equals_the_models_passes(
    fashion_cnn: nn.Module, test_images: tuple[torch.Tensor, torch.Tensor]
) -> None:
    """For ``features`` (a GAP + linear head) importance, curves and gradient x concept
    come from the head's weights; they equal the same quantities from passes of the model
    with the layer's output replaced."""
    x, labels = test_images[0][:80], test_images[1][:80]
    settings = ConceptSettings(k=4, importance_images=6, designs=8)
    fast = discover.concepts(fashion_cnn, x, "features", labels, [0, 1], settings)
    slow_init = discover._Scorer.__init__

    def no_head(self: discover._Scorer, *args: object) -> None:
        slow_init(self, *args)  # type: ignore[arg-type]
        self.head = None

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(discover._Scorer, "__init__", no_head)
        slow = discover.concepts(fashion_cnn, x, "features", labels, [0, 1], settings)
    for a, b in zip(fast.groups, slow.groups, strict=True):
        assert torch.equal(a.bank, b.bank)
        for name in ("sobol", "gradient", "deletion", "insertion", "random_insertion"):
            assert torch.allclose(getattr(a, name), getattr(b, name), atol=1e-4), name


@needs_fashion
def test_the_most_important_concept_beats_a_random_direction(
    fashion_cnn: nn.Module, test_images: tuple[torch.Tensor, torch.Tensor]
) -> None:
    """k=10 per class on fashion-cnn ``features``: every class's first concept, inserted
    alone, gives the class a higher probability than a random direction in its place;
    the reconstruction error is reported and below 1; deletion falls, insertion rises."""
    x, labels = test_images
    found = discover.concepts(fashion_cnn, x, "features", labels, list(range(10)))
    for group in found.groups:
        assert 0 < group.error < 1
        assert group.insertion[0, 1] > group.random_insertion[0], group.group
        assert group.deletion[0, -1] < group.deletion[0, 0]
        assert group.insertion[0, -1] > group.insertion[0, 0]
        assert group.exemplars.shape == (10, 8)
        assert bool((labels[group.exemplars] == group.group).all())


def test_maps_say_where_each_concept_is() -> None:
    """Two planted concepts (channels 0-1 and 2-3) in the left and right halves: each
    map is on its own half, and the factorisation finds the two directions."""
    model = nn.Sequential(nn.Identity(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    x = torch.zeros(6, 4, 8, 8)
    x[:, :2, :, :4] = torch.rand(6, 1, 8, 4) + 0.5
    x[:, 2:, :, 4:] = torch.rand(6, 1, 8, 4) + 0.5
    settings = ConceptSettings(k=2, top=2, designs=4)
    found = discover.concepts(model.eval(), x, "0", torch.arange(6) % 2, None, settings)
    bank = found.groups[0].bank
    maps = discover.concept_maps(model, x, "0", bank)
    left = int(bank[:, :2].sum(1).argmax())
    assert maps[:, left, :, :4].mean() > 10 * maps[:, left, :, 4:].mean()
    assert maps[:, 1 - left, :, 4:].mean() > 10 * maps[:, 1 - left, :, :4].mean()
    assert found.groups[0].error < 0.2


def test_a_direction_objective_takes_one_target_per_row(fashion_cnn: nn.Module) -> None:
    """``direction(layer, [T, C])`` scores each image by its own target's row."""
    from convlens.interpret.objectives import Batch

    rows = torch.rand(3, 128)
    objective = direction("features", rows)
    assert objective.targets == (0, 1, 2)
    acts = torch.rand(6, 128, 7, 7)
    batch = Batch(torch.tensor([0, 0, 1, 1, 2, 2]), 3, 2)
    expected = torch.stack(
        [(acts[i] * rows[i // 2][:, None, None]).sum(0).mean() for i in range(6)]
    )
    assert torch.allclose(objective.score({"features": acts}, batch), expected)


def test_bad_inputs_are_one_error_each(fashion_cnn: nn.Module) -> None:
    x = torch.randn(8, 1, 28, 28)
    labels = torch.arange(8) % 2
    with pytest.raises(
        NegativeActivationsError, match=r"'features.0.0.conv'.*'features.0.0.bn'|relu"
    ):
        discover.concepts(fashion_cnn, x, "features.0.0.conv", labels, None)
    with pytest.raises(ValueError, match="`k` = 200 concepts, but the layer has 128 channels"):
        discover.concepts(fashion_cnn, x, "features", labels, None, ConceptSettings(k=200))
    with pytest.raises(ValueError, match="class 12 is unknown"):
        discover.concepts(fashion_cnn, x, "features", labels, [12])
    with pytest.raises(ValueError, match="no image of class 5"):
        discover.concepts(fashion_cnn, x, "features", labels, [5])
    with pytest.raises(ValueError, match="`patches` of 40 px"):
        discover.concepts(fashion_cnn, x, "features", labels, None, ConceptSettings(patches=40))
    with pytest.raises(ValueError, match="unknown layer|not found|no layer"):
        discover.concepts(fashion_cnn, x, "nope", labels, None)
    shifted = discover.concepts(fashion_cnn, x, "features.0.0.conv", labels, None,
                                ConceptSettings(k=3, shift=True, top=2, designs=4))  # fmt: skip
    assert shifted.shift > 0 and shifted.groups[0].bank.min() >= 0


@needs_fashion
def test_the_cli_writes_the_concepts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "c"
    code = main(["concepts", "fashion-cnn", "--classes", "0", "Bag", "--limit", "300",
                 "--k", "4", "--top", "3", "--visualize-steps", "4", "--show", "2",
                 "--out", str(out)])  # fmt: skip
    assert code == 0
    strips = {f"strip-{c}-{i}.png" for c in (0, 8) for i in range(4)}
    figures = {"cards-0.png", "cards-8.png", "curves.png", "maps.png"}
    assert {p.name for p in out.iterdir()} == {"concepts.md", "concepts.json", *figures, *strips}
    data = json.loads((out / "concepts.json").read_text())
    assert [g["name"] for g in data["groups"]] == ["T-shirt/top", "Bag"]
    assert len(data["groups"][0]["bank"]) == 4 and len(data["groups"][0]["bank"][0]) == 128
    assert "reconstruction error" in (out / "concepts.md").read_text()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--k", "0"], "--k 0"),
        (["--k", "500"], "--k = 500 concepts, but the layer has 128 channels"),
        (["--classes", "Hat"], "Hat"),
        (
            ["--layer", "features.0.0.conv"],
            "'features.0.0.relu' (after a ReLU) has none; or shift them by their minimum (--shift)",
        ),
        (["--importance-images", "0"], "--importance-images 0"),
    ],
)
@needs_fashion
def test_the_cli_answers_bad_input_in_one_line_and_writes_nothing(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "c"
    code = main(["concepts", "fashion-cnn", "--limit", "50", "--out", str(out), *argv])
    assert code != 0
    assert message in one_error_line(capsys)
    assert not out.exists()


@needs_fashion
def test_concepts_show_in_the_atlas_and_the_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--atlas`` adds a card per concept above the unit cards (again: replaced, not
    repeated); ``convlens report --concepts`` shows the maps of the top class's concepts."""
    atlas, found, report = tmp_path / "atlas", tmp_path / "concepts", tmp_path / "report"
    assert main(["dissect", "fashion-cnn", "--limit", "100", "--out", str(atlas)]) == 0
    for _ in range(2):
        code = main(["concepts", "fashion-cnn", "--limit", "200", "--k", "3", "--top", "2",
                     "--visualize-steps", "2", "--show", "0", "--atlas", str(atlas),
                     "--out", str(found)])  # fmt: skip
        assert code == 0
    page = (atlas / "index.html").read_text()
    assert page.count('class="card concept"') == 3
    assert page.count("<!-- concepts -->") == 1
    assert len(list((atlas / "concepts").glob("strip-all-*.png"))) == 3
    assert main(["report", "fashion-cnn", "test:0", "test:1", "--concepts", str(found),
                 "--visualize-steps", "0", "--out", str(report)]) == 0  # fmt: skip
    html = (report / "index.html").read_text()
    assert 'id="concepts"' in html and "concepts-maps.png" in html
    assert (report / "concepts-cards-all.png").is_file()
    capsys.readouterr()
    other = main(["concepts", "fashion-cnn", "--layer", "features.1", "--limit", "50",
                  "--atlas", str(atlas), "--out", str(tmp_path / "no")])  # fmt: skip
    assert other != 0 and "is of layer 'features'" in one_error_line(capsys)
    assert not (tmp_path / "no").exists()
