"""Dissection against brute force: quantiles, top images, class selectivity, Broden IoU
and labels, the atlas in a real browser, and bad input."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from convlens.cli import main
from convlens.core.hooks import hook_count
from convlens.data import broden
from convlens.data.catalog import open_source
from convlens.data.images import Preprocessing
from convlens.data.sources import FolderSource, TensorSource
from convlens.interpret.dissect import DissectSettings, QuantileSketch, dissect
from convlens.render.atlas import write_atlas
from tests.browser import browser_check, needs_chromium
from tests.helpers import needs_fashion

RGB16 = Preprocessing(channels=3, size=16, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


def small_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 6, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(6, 5, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(5, 3),
    )


@pytest.mark.parametrize("q", [0.0, 0.3, 0.5, 0.9, 0.995, 1.0])
def test_sketch_quantile_is_within_its_bound(q: float) -> None:
    g = torch.Generator().manual_seed(1)
    values = torch.cat(
        [
            torch.randn(4, 3000, generator=g) * torch.tensor([[1.0], [1e-3], [50.0], [1.0]]),
            torch.zeros(4, 1000),  # ReLU-like mass at zero
            torch.rand(4, 2000, generator=g).exp(),
        ],
        1,
    )
    sketch = QuantileSketch(4)
    for part in values.split(777, dim=1):  # streamed in uneven pieces
        sketch.add(part)
    exact = torch.quantile(values, q, dim=1, interpolation="lower")
    got = sketch.quantile(q)
    bound = QuantileSketch.RELATIVE_ERROR * exact.abs() + 6e-8
    assert ((got - exact).abs() <= bound).all(), (got, exact)


def test_dissect_equals_brute_force() -> None:
    model = small_model()
    g = torch.Generator().manual_seed(2)
    x = torch.randn(37, 1, 9, 9, generator=g)
    labels = torch.randint(0, 3, (37,), generator=g)
    source = TensorSource(x, labels, ("a", "b", "c"))
    model.train()
    d = dissect(model, source, "3", top=5, quantile=0.02, batch_size=8, progress=False)
    assert model.training and hook_count(model) == 0
    with torch.no_grad():
        feats = model[:4].eval()(x)  # [N, C, h, w]
    # threshold: the top 2% of all activations of each unit, within the sketch's bound
    flat = feats.transpose(0, 1).flatten(1)
    exact = torch.quantile(flat, 0.98, dim=1, interpolation="lower")
    assert ((d.thresholds - exact).abs() <= exact.abs() / 257 + 6e-8).all()
    # top images: a full sort of the per-image peaks
    peaks = feats.amax((2, 3))  # [N, C]
    order = peaks.argsort(0, descending=True)[:5].T  # [C, 5]
    assert torch.equal(d.top_index, order)
    assert torch.allclose(d.top_score, peaks.gather(0, order.T).T)
    maps = torch.stack([feats[order[c], c] for c in range(feats.shape[1])])  # [C, 5, h, w]
    assert torch.equal(d.top_maps, maps)
    # class means and selectivity, computed directly
    means = feats.mean((2, 3))
    direct = torch.stack([means[labels == k].mean(0) for k in range(3)])
    assert d.class_means is not None and torch.allclose(d.class_means, direct, atol=1e-6)
    top = direct.max(0).values
    rest = (direct.sum(0) - top) / 2
    sel = d.selectivity
    assert sel is not None and torch.allclose(sel, (top - rest) / (top + rest), atol=1e-6)
    top_class = d.top_class
    assert top_class is not None and torch.equal(top_class, direct.argmax(0))
    # ranking by mean
    by_mean = dissect(model, source, "3", top=3, by="mean", batch_size=10, progress=False)
    assert torch.equal(by_mean.top_index, means.argsort(0, descending=True)[:3].T)


# ------------------------------------------------------------------- a Broden data set


def write_broden(root: Path, bad_mask: bool = False) -> dict[str, np.ndarray]:
    """Six 16x16 images with 16x16 segmentations of two concepts: ``red`` (color, label
    1) where the image is red, ``blue-thing`` (object, label 2) where it is blue; every
    image also has the whole-image scene label 3 (``room``). Returns the masks."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    index = [["image", "split", "ih", "iw", "sh", "sw", "color", "object", "scene"]]
    reds, blues = [], []
    for i in range(6):
        img = np.full((16, 16, 3), 90, dtype=np.uint8)
        red = np.zeros((16, 16), bool)
        blue = np.zeros((16, 16), bool)
        y, x = rng.integers(0, 9, 2)
        red[y : y + 6, x : x + 7] = True
        y, x = rng.integers(0, 10, 2)
        blue[y : y + 5, x : x + 5] = True
        blue &= ~red
        img[red] = (240, 20, 20)
        img[blue] = (20, 20, 240)
        Image.fromarray(img).save(root / "images" / f"im{i}.jpg", quality=98)
        size = 15 if bad_mask and i == 3 else 16
        for name, mask, label in (("color", red, 1), ("object", blue, 2)):
            seg = np.zeros((size, size, 3), dtype=np.uint8)
            seg[..., 0] = (mask[:size, :size] * label).astype(np.uint8)  # R + 256 * G
            Image.fromarray(seg).save(root / "images" / f"im{i}_{name}.png")
        index.append([f"im{i}.jpg", "train", "16", "16", "16", "16", f"im{i}_color.png",
                      f"im{i}_object.png", "3"])  # fmt: skip
        reds.append(red)
        blues.append(blue)
    with open(root / "index.csv", "w", newline="") as f:
        csv.writer(f).writerows(index)
    (root / "label.csv").write_text(
        "number,name,category,frequency,coverage,syns\n"
        "0,-,-,0,0,\n1,red,color(6),6,1.0,\n2,blue-thing,object(6),6,1.0,\n"
        "3,room,scene(6),6,6.0,\n"
    )
    return {"red": np.stack(reds), "blue": np.stack(blues)}


def colour_units() -> nn.Module:
    """Three units at half resolution: red minus the rest, blue minus the rest, noise."""
    conv = nn.Conv2d(3, 3, 2, stride=2)
    with torch.no_grad():
        w = torch.zeros(3, 3, 2, 2)
        w[0, 0], w[0, 1], w[0, 2] = 0.25, -0.25, -0.25
        w[1, 2], w[1, 0], w[1, 1] = 0.25, -0.25, -0.25
        w[2] = torch.randn(3, 2, 2, generator=torch.Generator().manual_seed(0)) * 0.01
        conv.weight.copy_(w)
        conv.bias.zero_()
    return nn.Sequential(conv, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 2))


def test_broden_units_get_the_concepts_they_detect(tmp_path: Path) -> None:
    masks = write_broden(tmp_path / "broden")
    source = open_source(str(tmp_path / "broden"), RGB16)
    assert isinstance(source, broden.BrodenSource)
    model = colour_units()
    d = dissect(model, source, "1", quantile=0.05, top=3, batch_size=4, progress=False)
    rows = d.unit_rows()
    assert [c.name for c in d.concepts] == ["red", "blue-thing", "room"]
    assert rows[0]["label"] == "red" and rows[1]["label"] == "blue-thing"
    assert rows[0]["category"] == "color" and rows[1]["category"] == "object"

    # IoU by hand, NetDissect-Lite's rule: a unit's pixels count towards the union of a
    # concept on the images where they touch a label of the concept's category
    x = torch.stack([source.batches(6).__next__().x[i] for i in range(6)])
    with torch.no_grad():
        feats = model[:2](x)
    up = torch.nn.functional.interpolate(feats, size=(16, 16), mode="bilinear",
                                         align_corners=False)  # fmt: skip
    active = (up > d.thresholds[None, :, None, None]).numpy()  # [6, 3, 16, 16]
    iou = d.iou
    assert iou is not None
    for unit in range(3):
        for k, concept in enumerate(("red", "blue")):
            m = masks[concept]
            a = active[:, unit]
            inter = (a & m).sum()
            touches = (a & m).reshape(6, -1).any(1)
            union = a[touches].sum() + m.sum() - inter
            want = inter / union if union else 0.0
            assert float(iou[unit, k]) == pytest.approx(want, abs=1e-6)
        # the scene label covers every image: its union is all of the unit's pixels
        room = active[:, unit].sum() / (active[:, unit].sum() + 6 * 256 - active[:, unit].sum())
        assert float(iou[unit, 2]) == pytest.approx(room, abs=1e-6)


def test_broden_bad_folders(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "label.csv").write_text("number,name\n1,x\n")
    with pytest.raises(broden.BrodenError, match="index.csv is missing"):
        open_source(str(tmp_path / "empty"), RGB16)
    write_broden(tmp_path / "bad", bad_mask=True)
    source = open_source(str(tmp_path / "bad"), RGB16)
    with pytest.raises(broden.BrodenError, match=r"im3_color.png is 15x15 but index.csv says"):
        dissect(colour_units(), source, "1", batch_size=2, progress=False)


# ---------------------------------------------------------------- folders, atlas, CLI


def write_folder(root: Path, broken: int = 0) -> None:
    rng = np.random.default_rng(0)
    for cls in ("cats", "dogs"):
        (root / cls).mkdir(parents=True)
        for i in range(5):
            a = rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)
            Image.fromarray(a).save(root / cls / f"{i}.png")
    for i in range(broken):
        (root / "dogs" / f"broken{i}.jpg").write_bytes(b"not a jpeg")


def test_folder_classes_skipped_files_and_atlas_in_chromium(tmp_path: Path) -> None:
    write_folder(tmp_path / "imgs", broken=2)
    source = FolderSource(tmp_path / "imgs", RGB16)
    assert source.classes == ("cats", "dogs") and len(source) == 12
    model = colour_units()
    d = dissect(model, source, "1", top=4, batch_size=4, workers=2, progress=False)
    assert d.images == 10 and len(d.skipped) == 2 and "broken" in d.skipped[0]
    assert d.class_counts is not None and d.class_counts.tolist() == [5, 5]
    page = write_atlas(d, source, tmp_path / "atlas", "test atlas", progress=False)
    rows = json.loads((page.parent / "units.json").read_text())["units"]
    assert [r["unit"] for r in rows] == [0, 1, 2] and len(rows[0]["top_images"]) == 4
    with open(page.parent / "units.csv") as f:
        assert [r["top_class"] for r in csv.DictReader(f)] == [r["top_class"] for r in rows]
    assert sorted(p.name for p in (page.parent / "units").iterdir()) == [
        "unit-0000.jpg", "unit-0001.jpg", "unit-0002.jpg"
    ]  # fmt: skip
    assert "2 unreadable files were skipped" in page.read_text()


@needs_chromium
def test_atlas_loads_in_chromium(tmp_path: Path) -> None:
    write_broden(tmp_path / "broden")
    source = open_source(str(tmp_path / "broden"), RGB16)
    d = dissect(colour_units(), source, "1", quantile=0.05, top=3, progress=False)
    page = write_atlas(d, source, tmp_path / "atlas", "broden atlas", progress=False)
    seen = browser_check(page, tmp_path)
    # three unit strips and the summary chart, all loaded, and no errors
    assert seen == {"images": 4, "bad": [], "errors": [], "console": []}


def test_a_rewrite_replaces_the_atlas_whole_and_an_interrupt_leaves_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_folder(tmp_path / "imgs")
    source = FolderSource(tmp_path / "imgs", RGB16)
    d = dissect(colour_units(), source, "1", top=2, progress=False)
    out = tmp_path / "atlas"
    write_atlas(d, source, out, "first", progress=False)
    (out / "stale.txt").write_text("from before")
    write_atlas(d, source, out, "second", progress=False)
    assert not (out / "stale.txt").exists() and "second" in (out / "index.html").read_text()

    def interrupted(*_a: object, **_k: object) -> bytes:
        raise KeyboardInterrupt

    monkeypatch.setattr("convlens.render.atlas.unit_strip", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_atlas(d, source, out, "third", progress=False)
    assert "second" in (out / "index.html").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["atlas", "imgs"]


def test_bad_input_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "none").mkdir()
    (tmp_path / "none" / "notes.txt").write_text("no images here")
    with pytest.raises(ValueError, match=r"no image files .* in it or below"):
        open_source(str(tmp_path / "none"), RGB16)
    with pytest.raises(ValueError, match="neither a FashionMNIST split"):
        open_source(str(tmp_path / "missing"), RGB16)
    with pytest.raises(ValueError, match="for 28x28 grayscale models only"):
        open_source("test", RGB16)
    write_folder(tmp_path / "imgs")
    source = FolderSource(tmp_path / "imgs", RGB16)
    model = colour_units()
    with pytest.raises(ValueError, match=r"unknown layer 'conv9'"):
        dissect(model, source, "conv9", progress=False)
    with pytest.raises(ValueError, match=r"layer '4' outputs \(4, 2\), not \[N, C, h, w\]"):
        dissect(model, source, "4", batch_size=4, progress=False)
    assert hook_count(model) == 0
    with pytest.raises(ValueError, match="quantile must be in"):
        dissect(model, source, "1", quantile=1.5, progress=False)
    write_folder(tmp_path / "junk", broken=0)
    for f in (tmp_path / "junk").rglob("*.png"):
        f.write_bytes(b"junk")
    with pytest.raises(ValueError, match="no image could be read"):
        dissect(model, FolderSource(tmp_path / "junk", RGB16), "1", progress=False)


@needs_fashion
@pytest.mark.slow
def test_cli_dissects_the_shipped_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "atlas"
    args = ["dissect", "fashion-cnn", "--data", "test", "--limit", "500", "--out", str(out)]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "dissected 128 units of features over 500 images" in text
    assert "most class-selective units:" in text
    meta = json.loads((out / "units.json").read_text())
    assert meta["layer"] == "features" and len(meta["units"]) == 128
    # the report shows the atlas's summary and its most selective units
    rep = tmp_path / "rep"
    assert (
        main(["report", "fashion-cnn", "test:0", "--dissection", str(out), "--out", str(rep)]) == 0
    )
    text = (rep / "index.html").read_text()
    best = max(meta["units"], key=lambda r: r["selectivity"])
    assert f'<img src="dissection-unit-{best["unit"]:04d}.png"' in text
    assert f"unit {best['unit']}: {best['top_class']} (selectivity" in text
    assert (rep / "dissection-summary.png").is_file()
    assert main(["report", "fashion-cnn", "test:0", "--dissection", str(tmp_path), "--out",
                 str(rep)]) == 2  # fmt: skip
    assert "holds no dissection (no units.json); run convlens dissect" in capsys.readouterr().err
    assert main(["dissect", "fashion-cnn", "--layer", "fc", "--limit", "5", "--out",
                 str(tmp_path / "x")]) == 2  # fmt: skip
    assert "dissection needs a convolutional layer" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_broden_counts_a_label_under_its_primary_category_and_ignores_unknown_ones(
    tmp_path: Path,
) -> None:
    """NetDissect-Lite's rule, by hand: a door listed as object(1);part(1) counts under
    object, where its coverage is larger, only; a pixel of label 99 (not in label.csv)
    counts for no label."""
    from convlens.interpret.dissect import _IoUTally

    root = tmp_path / "broden"
    (root / "images").mkdir(parents=True)
    Image.fromarray(np.full((16, 16, 3), 90, np.uint8)).save(root / "images" / "a.jpg")
    obj = np.zeros((16, 16), np.int64)
    obj[:8] = 1  # a door: 128 px
    part = np.zeros((16, 16), np.int64)
    part[8:10] = 2  # a handle: 32 px
    part[10:12] = 99  # a label number that label.csv does not list
    for name, seg in (("object", obj), ("part", part)):
        rgb = np.zeros((16, 16, 3), np.uint8)
        rgb[..., 0], rgb[..., 1] = seg % 256, seg // 256
        Image.fromarray(rgb).save(root / "images" / f"a_{name}.png")
    (root / "index.csv").write_text(
        "image,split,ih,iw,sh,sw,object,part\na.jpg,train,16,16,16,16,a_object.png,a_part.png\n"
    )
    (root / "label.csv").write_text(
        "number,name,category,frequency,coverage,syns\n"
        "0,-,-,0,0,\n1,door,object(1);part(1),1,1.0,\n2,handle,part(1),1,1.0,\n"
    )
    (root / "c_object.csv").write_text("code,number,name,frequency,coverage\n1,1,door,1,0.5\n")
    (root / "c_part.csv").write_text(
        "code,number,name,frequency,coverage\n1,1,door,1,0.01\n2,2,handle,1,0.1\n"
    )
    source = broden.BrodenSource(root, RGB16)
    assert {c.name: c.primary for c in source.concepts} == {"door": "object", "handle": "part"}
    # one unit, on over the door and one row more: 144 px
    feats = torch.zeros(1, 16, 16)
    feats[0, :9] = 1.0
    tally = _IoUTally(1, source.concepts, source.categories, "cpu")
    batch = next(source.batches(1))
    assert batch.segmentations is not None
    tally.add(feats, torch.tensor([0.5]), batch.segmentations[0])
    iou = tally.iou([1, 2])[0]
    # door: 128 / (144 unit px on images with an object label + 128 door px - 128)
    assert float(iou[0]) == pytest.approx(128 / 144)
    # handle: 16 / (144 + 32 - 16); label 99's 32 px are nobody's
    assert float(iou[1]) == pytest.approx(16 / 160)


def test_selectivity_is_read_after_the_relu_on_a_signed_layer() -> None:
    """On a layer with negative activations the index stays in [0, 1]: the class means
    are of max(0, activation), as Morcos et al. read them after the ReLU."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 1, 8, 8, generator=g)
    labels = torch.arange(40) % 4
    model = nn.Sequential(nn.Conv2d(1, 6, 3), nn.BatchNorm2d(6), nn.ReLU())
    with torch.no_grad():
        model[1].running_mean.fill_(0.3)  # means well away from zero, both signs
    source = TensorSource(x, labels, ("a", "b", "c", "d"))
    signed = dissect(model, source, "1", progress=False)
    after = dissect(model, source, "2", progress=False)
    assert signed.signed and not after.signed
    assert signed.selectivity is not None and after.selectivity is not None
    assert float(signed.selectivity.min()) >= 0 and float(signed.selectivity.max()) <= 1
    assert torch.allclose(signed.selectivity, after.selectivity)  # ReLU(BN) is the ReLU's
    raw = signed.class_means
    assert raw is not None and float(raw.min()) < 0  # the raw means are signed


def test_settings_as_an_object_or_as_keywords(tmp_path: Path) -> None:
    """``dissect`` takes its knobs as one DissectSettings or as keywords (the same
    answer); an unknown keyword and a bad value are refused in one line."""
    write_broden(tmp_path / "broden")
    source, model = open_source(str(tmp_path / "broden"), RGB16), colour_units()
    settings = DissectSettings(top=3, quantile=0.05, batch_size=4)
    a = dissect(model, source, "1", settings, progress=False)
    b = dissect(model, source, "1", top=3, quantile=0.05, batch_size=4, progress=False)
    torch.testing.assert_close(a.thresholds, b.thresholds, rtol=0, atol=0)
    assert a.top_index.tolist() == b.top_index.tolist() and a.top_index.shape[1] == 3
    with pytest.raises(TypeError, match="unexpected keyword 'tops'.*top, quantile, by"):
        dissect(model, source, "1", tops=3, progress=False)
    with pytest.raises(ValueError, match="quantile must be in"):
        dissect(model, source, "1", settings, quantile=2.0, progress=False)
