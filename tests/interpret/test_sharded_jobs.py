"""Dissection in shards: the same answer, to the bit, for any number of shards, in this
process or on a real local Ray cluster; a rerun computes only the missing shards; a
folder of another job and a shard that fails are each one clear error."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from convlens import models
from convlens.core.shards import ShardError, Sharding, plan
from convlens.data.catalog import open_source
from convlens.data.images import Preprocessing
from convlens.data.sources import FashionSplit, TensorSource
from convlens.interpret.dissect import Dissection, dissect
from convlens.interpret.objectives import channel, diversity
from convlens.interpret.visualize import Visualization, VisualizeSettings, visualize
from tests.helpers import ROOT, needs_fashion, tiny_gap_model
from tests.interpret.test_dissect import RGB16, colour_units, write_broden

FIELDS = ("thresholds", "top_index", "top_score", "top_maps", "class_means",
          "rectified_means", "class_counts", "iou")  # fmt: skip


def assert_same(a: Dissection, b: Dissection) -> None:
    for name in FIELDS:
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None), name
        if x is not None:
            assert x.dtype == y.dtype and torch.equal(x, y), name
    assert a.images == b.images and a.unit_rows() == b.unit_rows()


def labelled(n: int = 96, seed: int = 0) -> TensorSource:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 28, 28, generator=g)
    return TensorSource(x, torch.randint(0, 3, (n,), generator=g), ("a", "b", "c"))


def test_shard_boundaries_fall_on_whole_batches() -> None:
    parts = plan(1000, 3, 128)
    assert [(p.start, p.stop) for p in parts] == [(0, 256), (256, 640), (640, 1000)]
    assert [len(p) for p in plan(10, 70, 4)] == [4, 4, 2]  # no more shards than batches
    with pytest.raises(ValueError, match="`shards` must be at least 1"):
        plan(10, 0)


@needs_fashion
@pytest.mark.slow
def test_shards_equal_one_pass_over_the_fashion_test_set() -> None:
    model = models.load("fashion-cnn").model
    test = FashionSplit("test")
    one = dissect(model, test, "features", progress=False)
    assert one.images == 10_000
    for shards in (3, 7):
        assert_same(
            one, dissect(model, test, "features", progress=False, sharding=Sharding(shards))
        )


def test_shards_equal_one_pass_on_a_broden_set(tmp_path: Path) -> None:
    """Every IoU tally and label, with the second (IoU) pass in shards too."""
    write_broden(tmp_path / "broden")
    source = open_source(str(tmp_path / "broden"), RGB16)
    model = colour_units()
    kw = {"quantile": 0.05, "top": 3, "batch_size": 2, "progress": False}
    one = dissect(model, source, "1", **kw)
    assert one.iou is not None and one.best_concept is not None
    assert_same(one, dissect(model, source, "1", sharding=Sharding(3), **kw))


def test_a_rerun_computes_only_the_missing_shards(tmp_path: Path) -> None:
    model, data = tiny_gap_model().eval(), labelled()
    whole = dissect(model, data, "features", batch_size=8, progress=False)
    state = tmp_path / "state"

    def stop_after_two_shards(done: int, total: int) -> None:
        if done > 48:  # shards of 24 images: the third has begun
            raise KeyboardInterrupt

    kw = {"batch_size": 8, "sharding": Sharding(4, None, state), "progress": False}
    with pytest.raises(KeyboardInterrupt):
        dissect(model, data, "features", on_step=stop_after_two_shards, **kw)
    assert sorted(p.name for p in state.glob("pass1-*.pt")) == ["pass1-00000.pt", "pass1-00001.pt"]
    seen: list[int] = []
    again = dissect(model, data, "features", on_step=lambda d, t: seen.append(d), **kw)
    assert again.resumed == 2 and seen[-1] == 96
    assert_same(whole, again)
    assert dissect(model, data, "features", **kw).resumed == 4  # all kept: nothing runs


def test_a_folder_of_another_job_is_refused(tmp_path: Path) -> None:
    model, data = tiny_gap_model().eval(), labelled()
    kw = {"batch_size": 8, "sharding": Sharding(2, None, tmp_path), "progress": False}
    dissect(model, data, "features", **kw)
    with pytest.raises(ShardError, match=r"holds shards of another job \(it differs in settings\)"):
        dissect(model, data, "features", top=3, **kw)
    with pytest.raises(ShardError, match="differs in images, shards"):
        dissect(model, labelled(64), "features", **kw)
    with torch.no_grad():
        model.fc.bias.add_(1.0)
    with pytest.raises(ShardError, match="differs in weights"):
        dissect(model, data, "features", **kw)


def test_a_shard_that_fails_is_named_and_the_others_are_kept(tmp_path: Path) -> None:
    write_broden(tmp_path / "broden", bad_mask=True)  # image 3's segmentation is 15x15
    source = open_source(str(tmp_path / "broden"), RGB16)
    state = tmp_path / "state"
    kw = {"quantile": 0.05, "top": 3, "batch_size": 2, "progress": False}
    with pytest.raises(ShardError) as error:
        dissect(colour_units(), source, "1", sharding=Sharding(3, None, state), **kw)
    message = str(error.value)
    assert "1 shard(s) failed for good" in message and "shard 1 (items 2-3)" in message
    assert "im3_color.png" in message and "\n" not in message
    assert sorted(p.name for p in state.glob("pass1-*")) == ["pass1-00000.pt", "pass1-00002.pt"]


@needs_fashion
def test_the_cli_resumes_after_the_driver_is_killed(tmp_path: Path) -> None:
    """``kill -9`` of the command after some shards; the rerun computes only the rest
    and writes what an uninterrupted run writes."""
    cli = [str(Path(sys.executable).parent / "convlens"), "dissect", "fashion-cnn",
           "--limit", "3072", "--shards", "12", "--batch-size", "128",
           "--workers", "0"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    whole = tmp_path / "whole"
    subprocess.run([*cli, "--out", str(whole)], check=True, capture_output=True, env=env)
    out, state = tmp_path / "cut", tmp_path / "cut" / "shards"
    job = subprocess.Popen([*cli, "--out", str(out)], env=env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 120
    while len(list(state.glob("pass1-*.pt"))) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    job.send_signal(signal.SIGKILL)
    job.wait()
    kept = len(list(state.glob("pass1-*.pt")))
    assert 3 <= kept < 12, "the job was not cut in the middle"
    rerun = subprocess.run([*cli, "--out", str(out)], check=True, capture_output=True,
                           text=True, env=env)  # fmt: skip
    assert f"resumed {kept} of 12 shards from {state}" in rerun.stdout
    assert (out / "units.json").read_bytes() == (whole / "units.json").read_bytes()


# ------------------------------------------------------- a picture for every unit, in shards

GREY = Preprocessing(channels=1, size=28, mean=(0.5,), std=(0.5,))
PICTURE = ("images", "curve", "activation", "diversity_similarity")


def assert_same_pictures(a: Visualization, b: Visualization) -> None:
    for name in PICTURE:
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None), name
        if x is not None:
            assert torch.equal(x, y), name
    assert (a.units, a.dead) == (b.units, b.dead)


def pictures(sharding: Sharding | None = None, **kw: object) -> Visualization:
    torch.set_num_threads(1)  # as in each Ray task, so that every pass computes alike
    settings = VisualizeSettings(steps=12, batch_size=2, images=2)
    objective = channel("features", [5, 0, 3, 1, 4]) - 0.05 * diversity("features")
    return visualize(tiny_gap_model().eval(), objective, GREY, settings, sharding=sharding, **kw)


def test_a_units_picture_does_not_depend_on_its_neighbours() -> None:
    """Each unit starts from its own seed; the transforms follow the seed alone."""
    model = tiny_gap_model().eval()
    settings = VisualizeSettings(steps=12, batch_size=1)
    alone = visualize(model, channel("features", [3]), GREY, settings)
    among = visualize(model, channel("features", [5, 3, 1]), GREY, settings)
    assert torch.equal(alone.images[0], among.images[1])
    assert torch.equal(alone.curve[:, 0], among.curve[:, 1])
    other = visualize(model, channel("features", [3]), GREY, VisualizeSettings(12, seed=1))
    assert not torch.equal(alone.images, other.images)


def test_pictures_in_shards_equal_one_process(tmp_path: Path) -> None:
    one = pictures()
    assert one.images.shape == (5, 2, 1, 28, 28) and one.curve.shape == (12, 5)
    for shards in (2, 3):
        assert_same_pictures(one, pictures(Sharding(shards)))
    assert_same_pictures(one, pictures(Sharding(3, None, tmp_path)))
    assert sorted(p.name for p in tmp_path.glob("units-*.pt")) == [
        "units-00000.pt", "units-00001.pt", "units-00002.pt"]  # fmt: skip


class Cut(Exception):
    pass


def test_interrupted_pictures_resume_with_only_the_missing_shards(tmp_path: Path) -> None:
    one = pictures()
    calls: list[int] = []

    def cut_in_the_second_shard(done: int, total: int) -> None:
        calls.append(done)
        if done == 12 + 3:  # a pass (2 units) a shard, 12 steps: shard 0 done, 1 begun
            raise Cut

    with pytest.raises(Cut):
        pictures(Sharding(3, None, tmp_path), on_step=cut_in_the_second_shard)
    assert [p.name for p in tmp_path.glob("units-*.pt")] == ["units-00000.pt"]
    calls.clear()
    again = pictures(Sharding(3, None, tmp_path), on_step=lambda d, t: calls.append(d))
    assert_same_pictures(one, again)
    # shard 0 read back at once, shards 1 and 2 computed step by step (12 + 12)
    assert calls[0] == 12 and len(calls) == 1 + 24 and calls[-1] == 36
    longer = VisualizeSettings(steps=13, batch_size=2, images=2)
    objective = channel("features", [5, 0, 3, 1, 4]) - 0.05 * diversity("features")
    with pytest.raises(ShardError, match="differs in settings"):
        visualize(tiny_gap_model().eval(), objective, GREY, longer,
                  sharding=Sharding(3, None, tmp_path))  # fmt: skip


@needs_fashion
def test_the_cli_draws_every_unit_in_shards_and_dissect_adds_them(tmp_path: Path) -> None:
    from convlens.cli import main

    base = ["visualize", "fashion-cnn", "--layer", "features.1.1.conv", "--all", "--steps",
            "4", "--batch-size", "16"]  # fmt: skip
    assert main([*base, "--out", str(tmp_path / "one")]) == 0
    state = tmp_path / "state"  # OUT/shards, the default, goes when OUT is written
    assert (
        main([*base, "--shards", "3", "--state-dir", str(state), "--out", str(tmp_path / "three")])
        == 0
    )
    one, three = tmp_path / "one", tmp_path / "three"
    assert (one / "visualize.json").read_bytes() == (three / "visualize.json").read_bytes()
    pngs = sorted(p.name for p in one.glob("*.png"))
    assert len(pngs) > 3 and pngs == sorted(p.name for p in three.glob("*.png"))
    assert all((one / n).read_bytes() == (three / n).read_bytes() for n in pngs)
    assert len(list(state.glob("units-*.pt"))) == 3
    out, kept = tmp_path / "atlas", tmp_path / "kept"
    job = ["dissect", "fashion-cnn", "--layer", "features.1.1.conv", "--limit", "256",
           "--workers", "0", "--visualize", "--visualize-steps", "4", "--shards", "2"]  # fmt: skip
    assert main([*job, "--out", str(out)]) == 0
    assert not (out / "shards").exists()  # the finished job's shards go with the old OUT
    drawn = len(list((out / "units").glob("vis-*.png")))
    assert drawn > 3 and (out / "index.html").read_text().count('class="vis"') == drawn
    # kept elsewhere, the dissection's shards and the pictures' share a folder; a rerun
    # reads both back (a run cut while drawing resumes the same way)
    assert main([*job, "--state-dir", str(kept), "--out", str(tmp_path / "a")]) == 0
    pictures_kept = sorted((kept / "visualize").glob("units-*.pt"))
    assert pictures_kept  # 64 units: one pass of 128, one shard
    stamps = [p.stat().st_mtime_ns for p in pictures_kept]
    assert main([*job, "--state-dir", str(kept), "--out", str(tmp_path / "b")]) == 0
    assert stamps == [p.stat().st_mtime_ns for p in pictures_kept]
    assert (tmp_path / "a" / "index.html").read_bytes() == (
        tmp_path / "b" / "index.html"
    ).read_bytes()


# ----------------------------------------------------------------- on a local Ray cluster

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def cluster() -> object:
    """A real local Ray cluster of two worker CPUs, for this module's tests."""
    from convlens.core.shards import connect

    connect("local:2")
    yield ray
    ray.shutdown()


def test_on_ray_the_answer_is_the_same(cluster: object, tmp_path: Path) -> None:
    torch.set_num_threads(1)  # as in each Ray task, so that every batch computes alike
    model, data = tiny_gap_model().eval(), labelled(256)
    one = dissect(model, data, "features", batch_size=16, progress=False)
    steps: list[int] = []
    on_ray = dissect(model, data, "features", batch_size=16, progress=False,
                     sharding=Sharding(5, "local", tmp_path),
                     on_step=lambda d, t: steps.append(d))  # fmt: skip
    assert_same(one, on_ray)
    assert steps[-1] == 256 and len(list(tmp_path.glob("pass1-*.pt"))) == 5


def test_on_ray_a_killed_worker_costs_only_its_shard(cluster: object, tmp_path: Path) -> None:
    """``kill -9`` of a Ray worker while it runs a shard: Ray runs that shard again, and
    the answer is an uninterrupted run's."""
    psutil = pytest.importorskip("psutil")
    torch.set_num_threads(1)
    data = labelled(4096)
    one = dissect(tiny_gap_model().eval(), data, "features", batch_size=128, progress=False)
    killed: list[int] = []

    def kill_a_busy_worker() -> None:
        deadline = time.monotonic() + 120
        while not killed and time.monotonic() < deadline:
            for p in psutil.process_iter(["pid", "cmdline"]):
                if any("ray::_call" in part for part in p.info["cmdline"] or ()):
                    os.kill(p.info["pid"], signal.SIGKILL)
                    killed.append(p.info["pid"])
                    return
            time.sleep(0.02)

    killer = threading.Thread(target=kill_a_busy_worker)
    killer.start()
    again = dissect(tiny_gap_model().eval(), data, "features", batch_size=128,
                    sharding=Sharding(8, "local"), progress=False)  # fmt: skip
    killer.join()
    assert killed, "no worker was seen running a shard"
    assert_same(one, again)


def test_a_faithfulness_table_in_shards_is_bit_identical(tmp_path: Path) -> None:
    """Every row of every method, random maps (seeded by image) included; then resumed."""
    from convlens.interpret.faithfulness import score_methods

    model = tiny_gap_model().eval()
    g = torch.Generator().manual_seed(1)
    batches = [torch.randn(4, 1, 28, 28, generator=g) for _ in range(5)]
    methods = ["gradcam", "saliency", "random"]
    kw = {"steps": 4, "progress": False, "road": True, "sanity": True}
    one = score_methods(model, batches, methods, **kw)
    columns = ("road_morf", "road_lerf", "mprt", "emprt", "random_logit")
    for sharding in (Sharding(3), Sharding(5, None, tmp_path), Sharding(5, None, tmp_path)):
        again = score_methods(model, batches, methods, sharding=sharding, **kw)
        for a, b in zip(one, again, strict=True):
            assert a.images == b.images == 20
            assert (a.deletion_auc, a.insertion_auc, a.average_drop, a.increase) == (
                b.deletion_auc, b.insertion_auc, b.average_drop, b.increase)  # fmt: skip
            assert torch.equal(a.deletion, b.deletion) and torch.equal(a.insertion, b.insertion)
            assert repr([getattr(a, c) for c in columns]) == repr([getattr(b, c) for c in columns])
    assert len(list(tmp_path.glob("faithfulness-*.pt"))) == 5


def test_on_ray_pictures_are_the_same(cluster: object, tmp_path: Path) -> None:
    one = pictures()
    steps: list[int] = []
    on_ray = pictures(Sharding(3, "local", tmp_path), on_step=lambda d, t: steps.append(d))
    assert_same_pictures(one, on_ray)
    assert steps[-1] == 36 and len(list(tmp_path.glob("units-*.pt"))) == 3
