"""Training, evaluation and prediction for the FashionMNIST networks.

``train(config, run_dir)`` is the whole pipeline as one function; ``train_one_epoch``,
``evaluate`` and ``get_prediction`` are its public building blocks. A run directory
holds ``config.json``, ``metrics.json``, ``checkpoint.pt`` (everything needed to
resume) after every epoch, and ``model.pt`` plus ``summary.json`` at the end.

The per-epoch validation top-1 in ``metrics.json`` is measured with one plain
forward pass per image, to keep monitoring cheap; the final figures in
``summary.json`` (train, validation, test) average over the image and its mirror
image when ``config.tta`` is set.
"""

from __future__ import annotations

import functools
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from convlens.config import TrainConfig
from convlens.core.device import (
    autocast,
    autocast_dtype,
    keep_freed_memory,
    machine_info,
    resolve_device,
)
from convlens.core.progress import progress_bar
from convlens.data import fashion_mnist as fm
from convlens.inference import evaluate
from convlens.models.fashion_cnn import build_model
from convlens.training import rundir
from convlens.training.augment import alternating_flips
from convlens.training.parts import (
    AllImages,
    BatchMaker,
    BatchSelector,
    FreshHardest,
    Lookahead,
    RecordedHardest,
    StepHook,
    WeightAverage,
    channels_last,
)


class RunExistsError(ValueError):
    """A new run was asked for in a directory that holds one."""


class NonFiniteLossError(ValueError):
    """The training loss became NaN or infinite."""


def lr_at(step: int, total_steps: int, config: TrainConfig) -> float:
    """Learning rate at ``step`` (0-based) of ``total_steps``: a pure function.

    - ``constant``: ``lr``.
    - ``step``: ``lr`` divided by 10 after 50% and again after 75% of the steps.
    - ``cosine``: ``lr * (1 + cos(pi * t)) / 2`` with ``t = step / total_steps``.
    - ``onecycle``: linear warm-up from ``lr/10`` to ``lr`` over the first
      ``warmup`` fraction, then linear decay to 0 (a triangle, as in airbench).
    """
    t = step / max(1, total_steps)
    if config.schedule == "constant":
        return config.lr
    if config.schedule == "step":
        return config.lr * (0.1 if t >= 0.5 else 1.0) * (0.1 if t >= 0.75 else 1.0)
    if config.schedule == "cosine":
        return config.lr * 0.5 * (1.0 + math.cos(math.pi * t))
    w = config.warmup
    if t < w:
        return config.lr * (0.1 + 0.9 * t / w)
    return config.lr * max(0.0, (1.0 - t) / (1.0 - w))


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """The optimiser of ``config``; weight decay applies to conv/linear weights only."""
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            groups, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov
        )
    if config.optimizer == "adam":
        return torch.optim.Adam(groups, lr=config.lr, betas=(config.momentum, 0.999))
    return torch.optim.AdamW(groups, lr=config.lr, betas=(config.momentum, 0.999))


# ----------------------------------------------------------------------------- building blocks


@dataclass(frozen=True)
class EpochResult:
    loss: float  # mean training loss over the epoch
    accuracy: float  # top-1 on the (augmented) training batches, in [0, 1]
    steps: int


def train_one_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    batch_size: int = 256,
    batches: BatchMaker | None = None,
    selector: BatchSelector | None = None,
    hooks: Sequence[StepHook] = (),
    label_smoothing: float = 0.0,
    lr_schedule: Callable[[int], float] | None = None,
    start_step: int = 0,
    generator: torch.Generator | None = None,
    amp_dtype: torch.dtype | None = None,
    progress: tqdm | None = None,
) -> EpochResult:
    """One pass over ``images`` in a random order, updating ``model`` in place.

    Each step makes a batch (``batches``), asks ``selector`` which of its images to train
    on, takes one optimiser step on those, and runs each of ``hooks``.

    Args:
        model: the network; it is put in training mode (and left there).
        optimizer: updates ``model``'s parameters.
        images: model inputs ``[N, C, H, W]``; uint8 images are normalised with
            :func:`convlens.data.to_float`.
        labels: int64 ``[N]``.
        batch_size: images per step; the last incomplete batch is dropped when
            there is more than one batch.
        batches: augmentation and resizing (``None``: the images as they are).
        selector: which images of each batch to train on (``None``: all of them). A
            selector that ranks by a fresh pass reports that pass's loss and accuracy over
            the whole batch; otherwise the step's, on the images trained on, are reported.
        hooks: run after every optimiser step, in order (Lookahead, a weight average).
        label_smoothing: of the cross-entropy loss.
        lr_schedule: maps the global step to a learning rate (``None``: keep it).
        start_step: the global step of this epoch's first batch.
        generator: draws the order and the augmentation (reproducibility); ``None``
            seeds a fresh generator from torch's global RNG, so that successive calls
            shuffle differently and ``torch.manual_seed`` makes them reproducible.
        amp_dtype: autocast dtype (``torch.bfloat16``) or ``None`` for fp32.
        progress: a progress bar advanced once per step.

    Returns:
        Mean loss, top-1 accuracy on the training batches, number of steps.

    Raises:
        NonFiniteLossError: the loss became NaN or infinite.
    """
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"{images.shape[0]} images but {labels.shape[0]} labels")
    batches = batches if batches is not None else BatchMaker()
    selector = selector if selector is not None else AllImages()
    device = next(model.parameters()).device
    if generator is None:
        generator = torch.Generator().manual_seed(int(torch.randint(2**62, ())))
    per_image_loss = functools.partial(
        F.cross_entropy, label_smoothing=label_smoothing, reduction="none"
    )
    x_all = fm.to_float(images)
    steps = max(1, x_all.shape[0] // batch_size)
    order = torch.randperm(x_all.shape[0], generator=generator)
    model.train()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen = 0
    for i in range(steps):
        # the batch, the learning rate, and the images to step on
        idx = order[i * batch_size : (i + 1) * batch_size]
        x = batches(x_all, idx, generator, device)
        y = labels[idx].to(device, non_blocking=True)
        if lr_schedule is not None:
            for group in optimizer.param_groups:
                group["lr"] = lr_schedule(start_step + i)
        chosen = selector.select(model, x, y, idx, per_image_loss)
        x_step, y_step = x, y
        if chosen.keep is not None:
            x_step, y_step = channels_last(x[chosen.keep]), y[chosen.keep]

        # the step
        with autocast(device, amp_dtype):
            logits = model(x_step)
            if selector.per_image:
                step_losses = per_image_loss(logits.float(), y_step)
                loss = step_losses.mean()
            else:
                loss = F.cross_entropy(logits.float(), y_step, label_smoothing=label_smoothing)
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"training loss became {loss.item()} at step {start_step + i} (learning rate "
                f"{optimizer.param_groups[0]['lr']:g}); the learning rate is probably too "
                "high: lower `lr` or lengthen `warmup`"
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if selector.per_image:
            selector.trained(idx, chosen.keep, step_losses)
        for hook in hooks:
            hook.after_step(model, start_step + i)

        # the epoch's figures
        batch_loss, y_seen = loss.detach(), y_step
        if chosen.logits is not None and chosen.losses is not None:
            logits, batch_loss, y_seen = chosen.logits, chosen.losses.mean(), y
        loss_sum += batch_loss * y_seen.shape[0]
        correct += (logits.argmax(1) == y_seen).sum()
        seen += y_seen.shape[0]
        if progress is not None:
            progress.update(1)
            if i % 10 == 0 or i == steps - 1:
                progress.set_postfix(
                    loss=f"{loss_sum.item() / seen:.3f}", acc=f"{correct.item() / seen:.3f}"
                )
    return EpochResult(loss_sum.item() / seen, correct.item() / seen, steps)


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    config: TrainConfig
    metrics: list[dict[str, Any]]
    summary: dict[str, Any]


@dataclass(frozen=True)
class _Options:
    """How :func:`train` and :func:`resume` run, besides the config."""

    data_dir: str | None
    datasets: tuple[fm.Dataset, fm.Dataset] | None
    test: fm.Dataset | None
    progress: bool | None
    on_epoch: Callable[[dict[str, Any]], None] | None
    tune_allocator: bool


def train(
    config: TrainConfig,
    run_dir: str | Path,
    *,
    data_dir: str | None = None,
    datasets: tuple[fm.Dataset, fm.Dataset] | None = None,
    test: fm.Dataset | None = None,
    progress: bool | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    tune_allocator: bool = True,
) -> TrainResult:
    """Train ``config`` into a new run directory ``run_dir`` (see :mod:`rundir`).

    Args:
        config: the configuration.
        run_dir: the run directory; created if absent, and must not hold a run.
        data_dir: extra folder searched for FashionMNIST.
        datasets: ``(train, val)`` to train on instead of FashionMNIST's split.
        test: the test set for the final figure (default: FashionMNIST's test split;
            with ``datasets`` given and no ``test``, no test figure is computed).
        progress: show progress bars (``None``: only on a terminal).
        on_epoch: called with each epoch's row of ``metrics.json`` once that epoch's
            checkpoint is written; an exception from it stops the run there, and
            :func:`resume` continues it.
        tune_allocator: on CPU, tell glibc to keep freed memory for reuse (faster
            steps; see :func:`keep_freed_memory`). This one setting outlasts the call:
            glibc cannot be put back, and the process keeps its peak memory. The global
            RNG and the thread count are restored when ``train`` returns.

    Raises:
        RunExistsError: ``run_dir`` already holds a run.
        ValueError: a config that cannot train (sizes ending below full size).
        NonFiniteLossError: the loss diverged.
    """
    run_dir = Path(run_dir)
    if rundir.holds_run(run_dir):
        raise RunExistsError(
            f"{run_dir} already holds a training run; continue it (`resume`) or choose "
            "another `run_dir`"
        )
    config.check_trainable()
    options = _Options(data_dir, datasets, test, progress, on_epoch, tune_allocator)
    return _in_own_state(config, run_dir, None, options)


def resume(
    run_dir: str | Path,
    *,
    data_dir: str | None = None,
    datasets: tuple[fm.Dataset, fm.Dataset] | None = None,
    test: fm.Dataset | None = None,
    progress: bool | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    tune_allocator: bool = True,
) -> TrainResult:
    """Continue the interrupted run in ``run_dir`` from its last checkpoint, with the
    config it was started with; with the same data the result equals an uninterrupted
    run. A finished run is returned as it is. Arguments as for :func:`train`.

    Raises:
        ValueError: ``run_dir`` holds no checkpoint.
    """
    run_dir = Path(run_dir)
    if not (run_dir / rundir.CHECKPOINT).is_file():
        raise ValueError(
            f"cannot resume: {run_dir / rundir.CHECKPOINT} does not exist; start a new run"
        )
    config = rundir.load_run_config(run_dir)
    state = rundir.read_checkpoint(run_dir)
    options = _Options(data_dir, datasets, test, progress, on_epoch, tune_allocator)
    return _in_own_state(config, run_dir, state, options)


def _in_own_state(
    config: TrainConfig, run_dir: Path, state: dict[str, Any] | None, options: _Options
) -> TrainResult:
    """Run training and give back the process-wide state it changes: the global RNG
    (seeded for dropout) and the thread count. glibc's allocator setting
    (keep_freed_memory) lasts for the process; see ``tune_allocator``."""
    threads = torch.get_num_threads()
    try:
        with torch.random.fork_rng(devices=[]):
            return _train_run(config, run_dir, state, options)
    finally:
        torch.set_num_threads(threads)


def _train_run(
    config: TrainConfig, run_dir: Path, state: dict[str, Any] | None, options: _Options
) -> TrainResult:
    """The body of :func:`train`: data, model and optimiser, loop, final figures. The
    caller checked the run directory and restores the process state afterwards."""
    # data
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    test = options.test
    if options.datasets is None:
        full = fm.load_fashion_mnist("train", options.data_dir)
        train_set, val_set = fm.train_val_split(full, config.val_size, seed=0)
        test = test if test is not None else fm.load_fashion_mnist("test", options.data_dir)
    else:
        train_set, val_set = options.datasets
    if config.train_subset:
        train_set = train_set.subset(slice(0, config.train_subset))
    if config.shuffle_labels:  # the data randomisation test: nothing true left to learn
        order = torch.randperm(len(train_set), generator=torch.Generator().manual_seed(config.seed))
        train_set = fm.Dataset(train_set.images, train_set.labels[order], train_set.classes)

    # model and optimiser, restored from the checkpoint when resuming
    run = _Run.start(config, len(train_set), len(train_set.classes), options.tune_allocator)
    if state is not None:
        run.restore(state)
    rundir.write_config(run_dir, config)

    # loop
    while run.epoch < config.epochs:
        run.metrics.append(_train_epoch(run, config, train_set, val_set, options.progress))
        rundir.write_epoch(run_dir, run.checkpoint(config), run.metrics)
        if options.on_epoch is not None:
            options.on_epoch(run.metrics[-1])

    if (run_dir / rundir.SUMMARY).is_file() and state is not None:  # resumed a finished run
        summary = json.loads((run_dir / rundir.SUMMARY).read_text())
    else:
        summary = _finish(
            run_dir, run.final_model, config, run.metrics, train_set, val_set, test, run.amp
        )
    return TrainResult(run_dir, config, run.metrics, summary)


@dataclass
class _Run:
    """The state of a training run between epochs: everything a checkpoint holds."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    average: WeightAverage | None
    lookahead: Lookahead | None
    generator: torch.Generator  # draws the data order and the augmentation
    amp: torch.dtype | None
    steps_per_epoch: int
    total_steps: int
    # each training image's last known loss, for stale selective backprop (rank_every > 1)
    image_losses: torch.Tensor | None = None
    epoch: int = 0  # epochs finished
    metrics: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def start(
        cls, config: TrainConfig, train_size: int, num_classes: int, tune_allocator: bool
    ) -> _Run:
        # training's `auto` stays CUDA, else the CPU: its bf16 and channels-last paths
        # were measured there, not on MPS
        device = resolve_device(config.device, mps=False)
        if device.type == "cpu" and tune_allocator:
            keep_freed_memory()
        model = build_model(config, num_classes=num_classes).to(device)
        if device.type == "cpu":
            model = model.to(memory_format=torch.channels_last)
        steps_per_epoch = max(1, train_size // config.batch_size)
        total_steps = config.epochs * steps_per_epoch
        torch.manual_seed(config.seed)  # dropout draws from the global RNG
        return cls(
            model=model,
            optimizer=make_optimizer(model, config),
            average=WeightAverage(model, config.ema_decay) if config.ema_decay > 0 else None,
            lookahead=(
                Lookahead(model, config.lookahead, total_steps) if config.lookahead > 0 else None
            ),
            generator=torch.Generator().manual_seed(config.seed),
            amp=autocast_dtype(config.precision, device),
            steps_per_epoch=steps_per_epoch,
            total_steps=total_steps,
            image_losses=torch.zeros(train_size)
            if config.backprop_fraction < 1 and config.rank_every > 1
            else None,
        )

    @property
    def hooks(self) -> list[StepHook]:
        """What runs after every step: Lookahead, then the weight average."""
        return [h for h in (self.lookahead, self.average) if h is not None]

    def selector(self, config: TrainConfig, train_size: int) -> BatchSelector:
        """Which images epoch ``self.epoch`` trains on: every image until the warm-up is
        over, then the hardest of each batch, ranked afresh every ``rank_every``-th epoch
        and by the recorded losses in between (which a warm-up epoch records too)."""
        if not config.selective_epoch(self.epoch, train_size):
            return AllImages(self.image_losses)
        if self.epoch % config.rank_every == 0 or self.image_losses is None:
            return FreshHardest(config.backprop_fraction, self.amp, self.image_losses)
        return RecordedHardest(config.backprop_fraction, self.image_losses)

    @property
    def final_model(self) -> nn.Module:
        """The model that is evaluated: the weight average when there is one."""
        return self.average.model if self.average is not None else self.model

    def restore(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.average is not None:
            self.average.load_state_dict(state["average"])
        if self.lookahead is not None:
            self.lookahead.load_state_dict(state["lookahead"])
        if self.image_losses is not None:
            self.image_losses.copy_(state["image_losses"])
        self.generator.set_state(state["rng"]["data"])
        torch.set_rng_state(state["rng"]["torch"])
        self.metrics = list(state["metrics"])
        self.epoch = int(state["epoch"])

    def checkpoint(self, config: TrainConfig) -> dict[str, Any]:
        return {
            "config": config.to_dict(),
            "epoch": self.epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "average": self.average.state_dict() if self.average is not None else None,
            "lookahead": self.lookahead.state_dict() if self.lookahead is not None else None,
            "image_losses": self.image_losses,
            "scheduler": {
                "step": self.epoch * self.steps_per_epoch,
                "total_steps": self.total_steps,
            },
            "rng": {"data": self.generator.get_state(), "torch": torch.get_rng_state()},
        }


def _train_epoch(
    run: _Run,
    config: TrainConfig,
    train_set: fm.Dataset,
    val_set: fm.Dataset,
    progress: bool | None,
) -> dict[str, Any]:
    """Train epoch ``run.epoch`` and validate with one plain forward pass per image (the
    final figures add TTA); returns the epoch's row of ``metrics.json``."""
    t0 = time.perf_counter()
    bar = progress_bar(
        total=run.steps_per_epoch,
        desc=f"epoch {run.epoch + 1}/{config.epochs}",
        disable=None if progress is None else not progress,
        leave=True,
        dynamic_ncols=True,
    )
    with bar:
        result = train_one_epoch(
            run.model,
            run.optimizer,
            train_set.images,
            train_set.labels,
            batch_size=config.batch_size,
            batches=BatchMaker(
                augment=config.augment,
                crop_pad=config.crop_pad,
                flips=alternating_flips(len(train_set), run.epoch, config.seed)
                if "altflip" in config.augment.split("+")
                else None,
                size=config.image_size(run.epoch),
            ),
            selector=run.selector(config, len(train_set)),
            hooks=run.hooks,
            label_smoothing=config.label_smoothing,
            lr_schedule=lambda s: lr_at(s, run.total_steps, config),
            start_step=run.epoch * run.steps_per_epoch,
            generator=run.generator,
            amp_dtype=run.amp,
            progress=bar,
        )
        train_seconds = time.perf_counter() - t0
        val_top1 = (
            evaluate(run.final_model, val_set.images, val_set.labels, amp_dtype=run.amp)
            if len(val_set)
            else float("nan")
        )
        bar.set_postfix(
            loss=f"{result.loss:.3f}", acc=f"{result.accuracy:.3f}", val=f"{val_top1:.4f}"
        )
    run.epoch += 1
    return {
        "epoch": run.epoch,
        "train_loss": result.loss,
        "train_top1": result.accuracy,
        "val_top1": val_top1,
        "lr": run.optimizer.param_groups[0]["lr"],
        "seconds": time.perf_counter() - t0,
        "train_seconds": train_seconds,
    }


def _finish(
    run_dir: Path,
    model: nn.Module,
    config: TrainConfig,
    metrics: list[dict[str, Any]],
    train_set: fm.Dataset,
    val_set: fm.Dataset,
    test: fm.Dataset | None,
    amp: torch.dtype | None,
) -> dict[str, Any]:
    """Final figures and ``model.pt``: clean train top-1 on up to 10k training images,
    validation top-1 and (once, not for selection) test top-1, all with TTA when
    ``config.tta``."""
    g = torch.Generator().manual_seed(1)
    sample = torch.randperm(len(train_set), generator=g)[:10_000]
    summary: dict[str, Any] = {
        "epochs": len(metrics),
        "train_top1": evaluate(
            model, train_set.images[sample], train_set.labels[sample], tta=config.tta, amp_dtype=amp
        ),
        "val_top1": (
            evaluate(model, val_set.images, val_set.labels, tta=config.tta, amp_dtype=amp)
            if config.tta and len(val_set)
            else metrics[-1]["val_top1"]
        ),
        "test_top1": (
            evaluate(model, test.images, test.labels, tta=config.tta, amp_dtype=amp)
            if test is not None
            else None
        ),
        "train_seconds": sum(m["train_seconds"] for m in metrics),
        "seconds": sum(m["seconds"] for m in metrics),
        "machine": machine_info(),
    }
    rundir.write_final(run_dir, model, config, summary)
    return summary


__all__ = [
    "EpochResult",
    "NonFiniteLossError",
    "RunExistsError",
    "TrainResult",
    "lr_at",
    "make_optimizer",
    "resume",
    "train",
    "train_one_epoch",
]
