from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from convlens import models
from convlens.config import TrainConfig
from convlens.data import fashion_mnist as fm
from convlens.inference import evaluate, get_prediction
from convlens.training import augment
from convlens.training.loop import (
    NonFiniteLossError,
    lr_at,
    make_optimizer,
    resume,
    train,
    train_one_epoch,
)
from convlens.training.parts import (
    AllImages,
    BatchMaker,
    FreshHardest,
    Lookahead,
    RecordedHardest,
    frozen_batchnorm_stats,
    hardest,
    ranking_logits,
)


def test_train_one_epoch_learns(tiny_config: TrainConfig, tiny_data: tuple) -> None:
    train_set, val_set = tiny_data
    model = models.build_model(tiny_config)
    opt = make_optimizer(model, tiny_config)
    before = evaluate(model, val_set.images, val_set.labels)
    results = [
        train_one_epoch(model, opt, train_set.images, train_set.labels, batch_size=32)
        for _ in range(4)
    ]
    assert results[-1].loss < results[0].loss
    assert results[0].steps == 256 // 32
    after = evaluate(model, val_set.images, val_set.labels)
    assert after > max(before, 0.5)


def test_get_prediction_and_evaluate_agree(tiny_config: TrainConfig, tiny_data: tuple) -> None:
    _, val_set = tiny_data
    model = models.build_model(tiny_config)
    pred = get_prediction(model, val_set.images)
    assert pred.shape == (64,) and pred.dtype == torch.int64
    acc = evaluate(model, val_set.images, val_set.labels)
    assert acc == pytest.approx((pred == val_set.labels).float().mean().item())


def test_evaluate_restores_training_mode(tiny_config: TrainConfig, tiny_data: tuple) -> None:
    model = models.build_model(tiny_config).train()
    evaluate(model, tiny_data[1].images, tiny_data[1].labels, tta=True)
    assert all(m.training for m in model.modules())


def test_bad_inputs_are_rejected(tiny_config: TrainConfig, tiny_data: tuple) -> None:
    model = models.build_model(tiny_config)
    _, val = tiny_data
    with pytest.raises(ValueError, match="64 images but 3 labels"):
        evaluate(model, val.images, val.labels[:3])
    with pytest.raises(ValueError, match=r"must be \[N, C, H, W\]"):
        get_prediction(model, val.images[0])


def test_nan_loss_stops_with_learning_rate_hint(tiny_config: TrainConfig) -> None:
    model = models.build_model(tiny_config)
    opt = make_optimizer(model, tiny_config)
    images = torch.full((64, 1, 28, 28), float("nan"))
    with pytest.raises(NonFiniteLossError, match="loss became nan.*learning rate"):
        train_one_epoch(model, opt, images, torch.zeros(64, dtype=torch.long), batch_size=32)


def test_diverging_learning_rate_is_caught(
    tmp_path: Path, tiny_config: TrainConfig, tiny_data: tuple
) -> None:
    cfg = tiny_config.replace(lr=1e12, schedule="constant", epochs=2)
    with pytest.raises(NonFiniteLossError, match="lower `lr`"):
        train(cfg, tmp_path / "run", datasets=tiny_data, progress=False)
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


@pytest.mark.parametrize("schedule", ["constant", "step", "cosine", "onecycle"])
def test_schedules_are_pure_and_bounded(schedule: str) -> None:
    cfg = TrainConfig(schedule=schedule, lr=0.4, warmup=0.25)
    values = [lr_at(s, 100, cfg) for s in range(100)]
    assert values == [lr_at(s, 100, cfg) for s in range(100)]
    assert max(values) == pytest.approx(0.4) and min(values) >= 0
    if schedule == "onecycle":
        assert values[0] == pytest.approx(0.04) and values.index(max(values)) == 25
    if schedule == "step":
        assert values[60] == pytest.approx(0.04) and values[80] == pytest.approx(0.004)


def test_run_directory_contents(tmp_path: Path, tiny_config: TrainConfig, tiny_data: tuple) -> None:
    result = train(tiny_config, tmp_path / "run", datasets=tiny_data, progress=False)
    run = tmp_path / "run"
    assert json.loads((run / "config.json").read_text()) == tiny_config.to_dict()
    metrics = json.loads((run / "metrics.json").read_text())
    assert [m["epoch"] for m in metrics] == [1, 2, 3]
    assert {"train_loss", "train_top1", "val_top1", "seconds"} <= set(metrics[0])
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    assert {"model", "optimizer", "scheduler", "rng", "epoch"} <= set(ckpt)
    assert result.summary["val_top1"] == metrics[-1]["val_top1"]
    loaded = models.load(run)
    assert evaluate(loaded.model, tiny_data[1].images, tiny_data[1].labels) == pytest.approx(
        result.summary["val_top1"]
    )
    assert not list(run.glob(".*.tmp")), "temporary files left behind"
    with pytest.raises(
        ValueError, match="already holds a training run; continue it \\(`resume`\\)"
    ):
        train(tiny_config, run, datasets=tiny_data, progress=False)


def test_epoch_image_sizes(tiny_config: TrainConfig, tiny_data: tuple) -> None:
    config = tiny_config.replace(sizes=(12, 20, 28), epochs=5)
    assert [config.image_size(e) for e in range(5)] == [12, 20, 28, 28, 28]
    assert tiny_config.replace(low_res=0).image_size(0) == 28
    with pytest.raises(ValueError, match="sizes.*8..28"):
        tiny_config.replace(sizes=(4, 28))
    with pytest.raises(ValueError, match="low_res_size.*8..28"):
        tiny_config.replace(low_res_size=40)
    model = models.build_model(tiny_config)
    seen: list[tuple[int, ...]] = []
    model.register_forward_pre_hook(lambda m, args: seen.append(tuple(args[0].shape[2:])))
    opt = make_optimizer(model, tiny_config)
    part = tiny_data[0].subset(slice(0, 64))
    train_one_epoch(
        model, opt, part.images, part.labels, batch_size=32, batches=BatchMaker(size=12)
    )
    train_one_epoch(model, opt, part.images, part.labels, batch_size=32)
    assert seen == [(12, 12), (12, 12), (28, 28), (28, 28)]


def test_final_figures_use_tta_and_epochs_do_not(
    tmp_path: Path, tiny_config: TrainConfig, tiny_data: tuple
) -> None:
    # ranking every epoch gives a tiny model whose TTA changes a prediction (the assert below)
    cfg = tiny_config.replace(tta=True, rank_every=1)
    result = train(cfg, tmp_path / "run", datasets=tiny_data)
    model = models.load(tmp_path / "run").model
    val = tiny_data[1]
    plain = evaluate(model, val.images, val.labels)
    mirrored = evaluate(model, val.images, val.labels, tta=True)
    assert plain != mirrored, "the test needs a model whose TTA changes some prediction"
    assert result.metrics[-1]["val_top1"] == pytest.approx(plain)
    assert result.summary["val_top1"] == pytest.approx(mirrored)


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"ema_decay": 0.9, "dropout": 0.3, "augment": "flip+crop+erase"},
        {"lookahead": 0.8, "augment": "altflip+erase", "backprop_fraction": 0.5},
        # cut after the ranking epoch: the stale epoch after it needs the saved losses
        {"backprop_fraction": 0.5, "rank_every": 2, "backprop_warmup": 0},
        # cut after the warm-up epoch, which records the losses the stale epoch ranks by
        {"backprop_fraction": 0.5, "rank_every": 3},
    ],
)
def test_resume_equals_uninterrupted(
    tmp_path: Path, tiny_config: TrainConfig, tiny_data: tuple, changes: dict
) -> None:
    cfg = tiny_config.replace(**changes)
    full = train(cfg, tmp_path / "full", datasets=tiny_data, progress=False)

    class Killed(Exception):
        pass

    def kill(row: dict) -> None:
        raise Killed(row["epoch"])

    with pytest.raises(Killed):  # as if the process died after the first epoch
        train(cfg, tmp_path / "cut", datasets=tiny_data, progress=False, on_epoch=kill)
    assert not (tmp_path / "cut" / "model.pt").exists()
    assert len(json.loads((tmp_path / "cut" / "metrics.json").read_text())) == 1
    seen: list[int] = []
    # a resumed run reads its own config
    resumed = resume(
        tmp_path / "cut",
        datasets=tiny_data,
        progress=False,
        on_epoch=lambda r: seen.append(r["epoch"]),
    )
    assert seen == [2, 3]
    a = torch.load(tmp_path / "full" / "model.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "cut" / "model.pt", weights_only=True)["model"]
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    strip = [{k: v for k, v in m.items() if "seconds" not in k} for m in full.metrics]
    assert strip == [{k: v for k, v in m.items() if "seconds" not in k} for m in resumed.metrics]


def test_resume_without_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot resume.*does not exist"):
        resume(tmp_path)


def test_augmentations_keep_shape_and_content() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 1, 28, 28)
    assert augment.augment_batch(x, "flip+crop+erase", 2, g).shape == x.shape
    flipped = augment.random_flip(x, torch.Generator().manual_seed(1))
    for a, b in zip(x, flipped, strict=True):
        assert torch.equal(a, b) or torch.equal(a.flip(2), b)
    # a crop is a translation: each output equals the padded input at some offset
    cropped = augment.random_crop(x, 2, torch.Generator().manual_seed(2))
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2), value=float(x.amin()))
    for i in range(16):
        assert any(
            torch.equal(cropped[i], padded[i, :, dy : dy + 28, dx : dx + 28])
            for dy in range(5)
            for dx in range(5)
        )


def test_alternating_flips_show_each_image_both_ways() -> None:
    flips = [augment.alternating_flips(1000, epoch, seed=3) for epoch in range(4)]
    assert 400 < int(flips[0].sum()) < 600  # a random half first
    assert torch.equal(flips[0], ~flips[1]) and torch.equal(flips[0], flips[2])
    assert not torch.equal(flips[0], augment.alternating_flips(1000, 0, seed=4))
    x = torch.randn(4, 1, 5, 5)
    on = torch.tensor([True, False, True, False])
    out = augment.augment_batch(x, "altflip", 2, torch.Generator(), on)
    assert torch.equal(out[on], x[on].flip(3)) and torch.equal(out[~on], x[~on])
    with pytest.raises(ValueError, match="altflip.*one flip decision per image"):
        augment.augment_batch(x, "altflip", 2, torch.Generator())


def test_lookahead_moves_slow_weights_and_ends_on_them() -> None:
    model = torch.nn.Linear(2, 1, bias=False)
    torch.nn.init.zeros_(model.weight)
    la = Lookahead(model, decay=0.5, total_steps=10, every=5)
    with torch.no_grad():
        model.weight.fill_(1.0)
    la.after_step(model, 0)  # not a 5th step: nothing happens
    assert torch.equal(model.weight, torch.ones(1, 2))
    la.after_step(model, 4)  # d = 0.5 * (5 / 10)^3 = 1/16: slow = 1/16 * 0 + 15/16 * 1
    assert torch.allclose(model.weight, torch.full((1, 2), 15 / 16))
    with torch.no_grad():
        model.weight.fill_(3.0)
    la.after_step(model, 9)  # the last step: the model takes the slow weights, unmixed
    assert torch.allclose(model.weight, torch.full((1, 2), 15 / 16))


def test_selective_backprop_trains_on_the_hardest_images(
    tiny_config: TrainConfig, tiny_data: tuple
) -> None:
    model = models.build_model(tiny_config).train()
    x, y = fm.to_float(tiny_data[0].images[:32]), tiny_data[0].labels[:32]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with frozen_batchnorm_stats(model):
        logits = ranking_logits(model, x, None)
    for k, v in model.state_dict().items():  # the ranking pass leaves BatchNorm as it was
        assert torch.equal(v, before[k]), k
    assert all(m.momentum == 0.1 for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert torch.equal(logits, model(x).float())  # and normalises by the batch, as a step does
    losses = torch.nn.functional.cross_entropy(logits, y, reduction="none")
    keep = hardest(losses, 0.25)
    assert sorted(keep.tolist()) == sorted(losses.argsort(descending=True)[:8].tolist())
    # one epoch on a quarter of each batch runs every step and reports a finite loss
    opt = make_optimizer(model, tiny_config)
    images, labels = tiny_data[0].images, tiny_data[0].labels
    result = train_one_epoch(
        model, opt, images, labels, batch_size=32, selector=FreshHardest(0.25),
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    assert result.steps == len(labels) // 32 and 0 < result.loss < 10


def test_stale_selective_backprop_ranks_by_the_last_known_losses(
    tiny_config: TrainConfig, tiny_data: tuple
) -> None:
    model = models.build_model(tiny_config)
    opt = make_optimizer(model, tiny_config)
    images, labels = tiny_data[0].images[:64], tiny_data[0].labels[:64]
    known = torch.randperm(64, generator=torch.Generator().manual_seed(3)).float() + 100
    losses = known.clone()
    result = train_one_epoch(
        model, opt, images, labels, batch_size=64, selector=RecordedHardest(0.25, losses),
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    hardest16 = known.argsort(descending=True)[:16]
    changed = (losses != known).nonzero().flatten()
    # the 16 highest known losses were trained on, and now hold their training-pass loss
    assert sorted(changed.tolist()) == sorted(hardest16.tolist())
    assert losses[changed].max() < 10 and result.loss == pytest.approx(losses[changed].mean())
    # a fresh ranking pass records every image's loss, and so does a warm-up epoch
    for selector in (FreshHardest(0.25, image_losses=losses), AllImages(losses)):
        losses.copy_(known)
        train_one_epoch(
            model, opt, images, labels, batch_size=64, selector=selector,
            generator=torch.Generator().manual_seed(0),
        )  # fmt: skip
        assert losses.max() < 10


def test_config_rejects_unknown_keys_and_bad_values() -> None:
    with pytest.raises(ValueError, match="unknown config key.*lrr"):
        TrainConfig.from_dict({"lrr": 0.1})
    with pytest.raises(ValueError, match="optimizer='rmsprop' is not one of"):
        TrainConfig(optimizer="rmsprop")
    with pytest.raises(ValueError, match="augment='rotate'"):
        TrainConfig(augment="rotate")
    with pytest.raises(ValueError, match="augment='flip\\+altflip'"):
        TrainConfig(augment="flip+altflip")
    with pytest.raises(ValueError, match="lookahead must be in"):
        TrainConfig(lookahead=1.0)
    with pytest.raises(ValueError, match="backprop_fraction must be in"):
        TrainConfig(backprop_fraction=0.0)
    with pytest.raises(ValueError, match="rank_every must be >= 1"):
        TrainConfig(rank_every=0)
    with pytest.raises(ValueError, match="lr must be > 0"):
        TrainConfig(lr=0)
    assert TrainConfig.from_dict({"widths": "8,16", "depth": [1, 1]}).widths == (8, 16)


@pytest.mark.parametrize("scheme", ["default", "kaiming", "xavier", "orthogonal"])
def test_build_model_is_seeded(scheme: str) -> None:
    cfg = TrainConfig(widths=(4, 8), depth=(1, 1), init=scheme)
    a, b = models.build_model(cfg), models.build_model(cfg)
    for (k, v), w in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(v, w), k
    out = a.eval()(torch.randn(2, 1, 28, 28))
    assert out.shape == (2, 10)


def test_uint8_and_float_inputs_agree(tiny_config: TrainConfig, tiny_data: tuple) -> None:
    model = models.build_model(tiny_config)
    images = tiny_data[1].images
    assert torch.equal(get_prediction(model, images), get_prediction(model, fm.to_float(images)))


def test_saved_configs_keep_how_they_were_trained() -> None:
    saved = TrainConfig(epochs=10).to_dict()  # the default of those days
    del saved["sizes"], saved["low_res"], saved["low_res_size"]
    # written before per-epoch sizes existed: full size throughout
    old = TrainConfig.from_saved(saved)
    assert [old.image_size(e) for e in range(old.epochs)] == [28] * 10
    # written while `sizes` was the default schedule (5 epochs at 20 px, then 28 px)
    sized = TrainConfig.from_saved({**saved, "sizes": [20, 20, 20, 20, 20, 28]})
    assert [sized.image_size(e) for e in range(10)] == [20] * 5 + [28] * 5
    # ... also a short run that ended below full size: it loads and resumes as trained
    short = TrainConfig.from_saved({**saved, "epochs": 2, "sizes": [20, 20, 20, 20, 20, 28]})
    assert [short.image_size(e) for e in range(2)] == [20, 20]
    assert TrainConfig.from_dict(saved).low_res == TrainConfig().low_res  # a partial file
    assert TrainConfig.from_saved(TrainConfig().to_dict()) == TrainConfig()
    # written before the warm-up: selective backprop from the first step, as trained
    del saved["backprop_warmup"]
    assert TrainConfig.from_saved(saved).selective_epoch(0, 50_000)


def test_selective_backprop_starts_after_the_warm_up() -> None:
    config = TrainConfig()  # 50,000 images in full, then 35% of each batch
    assert [config.selective_epoch(e, 50_000) for e in range(3)] == [False, True, True]
    # a subset: every epoch that begins before 50,000 images were seen trains on all
    assert [config.selective_epoch(e, 12_000) for e in range(6)] == [False] * 5 + [True]
    assert config.replace(backprop_warmup=0).selective_epoch(0, 12_000)
    assert not config.replace(backprop_fraction=1.0).selective_epoch(10, 50_000)
    with pytest.raises(ValueError, match="backprop_warmup must be >= 0"):
        TrainConfig(backprop_warmup=-1)


@pytest.mark.parametrize("epochs", [1, 2, 3, 4, 5, 10, 17])
def test_every_run_ends_at_full_size(epochs: int) -> None:
    config = TrainConfig(epochs=epochs)
    schedule = [config.image_size(e) for e in range(epochs)]
    assert schedule[-1] == 28
    assert schedule.count(20) == epochs // 2  # the default low_res=0.5
    config.check_trainable()


def test_runs_that_would_end_below_full_size_are_refused(
    tmp_path: Path, tiny_config: TrainConfig, tiny_data: tuple
) -> None:
    config = tiny_config.replace(sizes=(16, 16, 16, 16, 28), epochs=3)
    with pytest.raises(ValueError, match="end at 16 px in epoch 3 of 3.*tested at 28 px"):
        train(config, tmp_path / "run", datasets=tiny_data)
    assert not (tmp_path / "run").exists()


def test_shuffled_labels_leave_nothing_to_generalise(
    tmp_path: Path, tiny_config: TrainConfig, tiny_data: tuple
) -> None:
    """The data randomisation test's network: trained on permuted labels, it is at chance
    on the (true) validation labels, where the same training on true labels is not."""
    config = tiny_config.replace(epochs=8, low_res=0.0, backprop_fraction=1.0, rank_every=1,
                                 widths=(8, 16), lr=0.1)  # fmt: skip
    real = train(config, tmp_path / "real", datasets=tiny_data, progress=False)
    shuffled = train(config.replace(shuffle_labels=True), tmp_path / "shuffled",
                     datasets=tiny_data, progress=False)  # fmt: skip
    assert real.summary["val_top1"] > 0.8  # 0.92 measured
    assert shuffled.summary["val_top1"] < 0.3  # 0.17
    from convlens.config import preset

    assert preset("shuffled-labels").shuffle_labels


def test_lenet_trains_saves_and_loads(
    tmp_path: Path, tiny_config: TrainConfig, tiny_data: tuple
) -> None:
    """The preset's network (Hedström et al.'s LeNet) goes through the same pipeline:
    trained, saved, loaded back as a LeNet with the same answers; it takes 28 px only."""
    from convlens.config import preset
    from convlens.models.lenet import LeNet

    config = tiny_config.replace(architecture="lenet", low_res=0.0, epochs=6, optimizer="adam",
                                 lr=0.003, backprop_fraction=1.0, rank_every=1)  # fmt: skip
    run = train(config, tmp_path / "lenet", datasets=tiny_data, progress=False)
    assert run.summary["val_top1"] > 0.8  # 0.98 measured; chance is 0.1
    loaded = models.load(str(tmp_path / "lenet"))
    assert isinstance(loaded.model, LeNet)
    val = tiny_data[1]
    assert evaluate(loaded.model, val.images, val.labels) == pytest.approx(run.summary["val_top1"])
    with torch.no_grad(), pytest.raises(ValueError, match="28 x 28"):
        loaded.model(torch.zeros(1, 1, 20, 20))
    with pytest.raises(ValueError, match="low_res=0"):
        TrainConfig(architecture="lenet")
    with pytest.raises(ValueError, match="architecture='vgg'"):
        TrainConfig(architecture="vgg")
    assert preset("lenet").architecture == "lenet"
    assert TrainConfig.from_saved({"epochs": 3}).architecture == "fashion-cnn"
