"""Hyperparameter sweeps on Optuna (Problem 4d).

A sweep is an Optuna study whose trials are ordinary training run directories
(``SWEEP_DIR/trials/<params>``). The study lives in a storage URL: by default a
SQLite file in the sweep directory; any SQLAlchemy URL (PostgreSQL) or
``journal:PATH`` (Optuna's journal file) lets several ``convlens sweep`` workers, on
one machine or many, share it.

Two kinds of sweep:

- **fixed points**: a grid (``--param lr=0.05,0.1 --param optimizer=sgd,adam`` gives
  the cross product) or a preset (one hyperparameter varied at a time around the
  baseline). The worker that creates the study puts every point in Optuna's queue of
  waiting trials; workers take trials from the queue one at a time, and a waiting
  trial can be taken by one worker only, so the points are never run twice.
- **search**: ranges (``lr=log:1e-4:1e-1``) sampled by random search or TPE for
  ``--trials`` trials in all.

Each running trial records a heartbeat. A trial whose worker died (its process is
gone, or its heartbeat is older than ``STALE_AFTER`` seconds) is marked failed and its
parameters are queued again; its run directory resumes from the last finished epoch,
and finished trials are never run again.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import math
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from convlens.config import TrainConfig, coerce, field_type
from convlens.fileio import atomic_write_json
from convlens.train import NonFiniteLossError, load_run_config, train

STALE_AFTER = 120.0  # seconds without a heartbeat before a running trial counts as dead
HEARTBEAT = 10.0  # seconds between heartbeats
SPEC_ATTR = "convlens_spec"

optuna.logging.set_verbosity(optuna.logging.WARNING)


# ----------------------------------------------------------------------------- specs


@dataclass(frozen=True)
class Range:
    """A numeric search range: ``log:LO:HI``, ``float:LO:HI`` or ``int:LO:HI``."""

    kind: str
    low: float
    high: float


def parse_param(text: str) -> tuple[str, list[Any] | Range]:
    """``name=v1,v2,...`` (values) or ``name=log:lo:hi`` / ``float:lo:hi`` / ``int:lo:hi``.

    Values are converted to the config field's type; tuple fields take ``16x32x64``.

    Raises:
        ValueError: malformed text, unknown field, or a value of the wrong type.
    """
    name, sep, rest = text.partition("=")
    name = name.strip().replace("-", "_")
    if not sep or not name or not rest:
        raise ValueError(f"--param {text!r}: expected NAME=V1,V2,... or NAME=log:LO:HI")
    field_type(name)  # unknown field -> ValueError listing the valid ones
    head, _, tail = rest.partition(":")
    if head in ("log", "float", "int") and tail:
        try:
            lo, hi = (float(v) for v in tail.split(":"))
        except ValueError as e:
            raise ValueError(f"--param {text!r}: expected {head}:LO:HI with two numbers") from e
        if not lo < hi or (head == "log" and lo <= 0):
            raise ValueError(f"--param {text!r}: need 0 < LO < HI for log, LO < HI otherwise")
        if field_type(name) not in (int, float):
            raise ValueError(f"--param {text!r}: {name} is not numeric, give a list of values")
        return name, Range(head, lo, hi)
    values = [coerce(name, v.strip()) for v in rest.split(",") if v.strip()]
    if not values:
        raise ValueError(f"--param {text!r}: no values")
    return name, values


def _json_value(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


# One hyperparameter at a time around the baseline (TrainConfig's defaults). Each
# point is a dict of overrides; its first key is the hyperparameter it is about, and
# further keys are companions it needs (Adam at SGD's learning rate would diverge).
PRESETS: dict[str, list[dict[str, Any]]] = {
    "augmentation": [
        {"augment": a} for a in ("none", "flip", "crop", "erase", "flip+crop", "flip+crop+erase")
    ],
    "init": [{"init": i} for i in ("default", "xavier", "orthogonal")],
    "architecture": [
        {"depth": [1, 1, 1]},
        {"depth": [2, 2, 2]},
        {"widths": [16, 32, 64]},
        {"widths": [48, 96, 192]},
    ],
    "optimizer": [
        {"optimizer": "adam", "lr": 2e-3, "weight_decay": 0.0},
        {"optimizer": "adamw", "lr": 2e-3, "weight_decay": 0.05},
    ],
    "lr": [
        *({"lr": lr} for lr in (0.05, 0.1, 0.2, 0.8)),
        *({"schedule": s} for s in ("constant", "step", "cosine")),
    ],
    "regularization": [
        *({"weight_decay": wd} for wd in (0.0, 5e-5, 2e-3)),
        *({"dropout": p} for p in (0.2, 0.4)),
        *({"label_smoothing": s} for s in (0.0, 0.2)),
    ],
}


@dataclass(frozen=True)
class SweepSpec:
    """What a study runs; stored in the study so every worker runs the same thing."""

    base: dict[str, Any]  # the baseline config
    points: list[dict[str, Any]] = field(default_factory=list)  # fixed points (overrides)
    kind: str = "grid"  # grid | preset | search
    ranges: dict[str, dict[str, Any]] = field(default_factory=dict)  # search: name -> range
    choices: dict[str, list[Any]] = field(default_factory=dict)  # search: name -> values
    sampler: str = "tpe"  # search: random | tpe
    trials: int = 0  # search: trials in all
    seed: int = 0

    def to_json(self) -> str:
        return json.dumps(self.__dict__)  # key order matters: a point's first key is its subject

    @classmethod
    def from_json(cls, text: str) -> SweepSpec:
        return cls(**json.loads(text))


def make_spec(
    base: TrainConfig,
    params: Sequence[str] = (),
    presets: Sequence[str] = (),
    trials: int | None = None,
    sampler: str | None = None,
    seed: int = 0,
) -> SweepSpec:
    """Build a sweep from ``--param`` texts and/or preset names.

    Lists of values without ranges make a grid (every combination); presets add their
    points and the baseline; any range makes it a search of ``trials`` trials with
    ``sampler`` (``tpe`` by default, or ``random``).
    """
    if not params and not presets:
        raise ValueError("give --param NAME=VALUES or --preset NAME (see --help)")
    unknown = [p for p in presets if p not in PRESETS and p != "all"]
    if unknown:
        raise ValueError(f"unknown preset(s) {unknown}; choose from {', '.join(PRESETS)} or all")
    parsed = [parse_param(p) for p in params]
    names = [n for n, _ in parsed]
    if len(set(names)) != len(names):
        raise ValueError(f"a hyperparameter is given twice in --param: {names}")
    base_dict = base.to_dict()
    if any(isinstance(v, Range) for _, v in parsed) or sampler in ("random", "tpe"):
        if presets:
            raise ValueError("presets are fixed points; do not mix them with a search")
        if not trials or trials < 1:
            raise ValueError("a search needs --trials N (N >= 1)")
        ranges = {
            n: {"kind": v.kind, "low": v.low, "high": v.high}
            for n, v in parsed
            if isinstance(v, Range)
        }
        choices = {n: [_json_value(x) for x in v] for n, v in parsed if not isinstance(v, Range)}
        return SweepSpec(
            base_dict,
            kind="search",
            ranges=ranges,
            choices=choices,
            sampler=sampler or "tpe",
            trials=trials,
            seed=seed,
        )
    if sampler not in (None, "grid"):
        raise ValueError(f"unknown sampler {sampler!r}; choose grid, random or tpe")
    points: list[dict[str, Any]] = []
    if presets:
        chosen = list(PRESETS) if "all" in presets else list(dict.fromkeys(presets))
        points.append({})  # the baseline
        for name in chosen:
            for p in PRESETS[name]:
                # A preset point that is the baseline itself runs once, as the baseline.
                same = all(base_dict.get(k) == _json_value(v) for k, v in p.items())
                points.append({} if same else dict(p))
    if parsed:
        lists = [[(n, _json_value(x)) for x in v] for n, v in parsed if isinstance(v, list)]
        points += [dict(combo) for combo in itertools.product(*lists)]
    unique: list[dict[str, Any]] = []
    for p in points:
        TrainConfig.from_dict({**base_dict, **p}).check_trainable()  # each must be valid
        if p not in unique:
            unique.append(p)
    kind = "preset" if presets and not parsed else "grid"
    return SweepSpec(base_dict, points=unique, kind=kind, seed=seed)


def point_key(params: dict[str, Any]) -> str:
    """A readable, file-system-safe name for a point: ``lr=0.1,optimizer=adam``."""
    if not params:
        return "baseline"
    parts = []
    for k in sorted(params):
        v = params[k]
        v = "x".join(map(str, v)) if isinstance(v, list | tuple) else str(v)
        parts.append(f"{k}={v}")
    key = ",".join(parts).replace("/", "_").replace(" ", "")
    # str hash() differs between processes; run directories must not.
    return key if len(key) <= 120 else key[:100] + "-" + hashlib.sha1(key.encode()).hexdigest()[:8]


# ----------------------------------------------------------------------------- storage


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """An Optuna storage for ``url``: ``journal:PATH`` or any SQLAlchemy URL.

    SQLite connections wait up to a minute for a lock, so several local workers can
    share one file.
    """
    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend

        path = Path(url[len("journal:") :]).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    engine: dict[str, Any] = {}
    if url.startswith("sqlite"):
        engine = {"connect_args": {"timeout": 60}}
    for attempt in range(4):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=engine)
        except Exception as e:  # SQLAlchemy raises many kinds; name the URL and the cause
            # Workers starting together on an empty database race to create its tables.
            if attempt == 3 or "connection" in str(e).lower():
                raise ValueError(f"cannot open sweep storage {url!r}: {e}") from e
            time.sleep(0.5 + attempt)
    raise AssertionError("unreachable")


def default_storage(sweep_dir: Path) -> str:
    return f"sqlite:///{(sweep_dir / 'study.db').resolve()}"


def open_study(
    storage: optuna.storages.BaseStorage, name: str, spec: SweepSpec | None, wait: float = 60.0
) -> tuple[optuna.Study, SweepSpec]:
    """Create the study (and queue its points) or join the existing one.

    Exactly one worker creates a study; it queues every fixed point and then stores
    the spec, which is what joining workers wait for.

    Raises:
        ValueError: joining a study that does not exist without a spec, or with a
            different spec.
    """
    if spec is not None:
        try:
            study = optuna.create_study(
                storage=storage,
                study_name=name,
                direction="maximize",
                sampler=_sampler(spec),
            )
        except optuna.exceptions.DuplicatedStudyError:
            pass
        else:
            for point in spec.points:
                study.enqueue_trial({}, user_attrs={"point": point}, skip_if_exists=False)
            study.set_user_attr(SPEC_ATTR, spec.to_json())
            return study, spec
    deadline = time.monotonic() + wait
    while True:
        try:
            study = optuna.load_study(study_name=name, storage=storage)
        except KeyError as e:
            if spec is None:
                raise ValueError(
                    f"no study {name!r} in this storage; start it with --param or --preset"
                ) from e
            raise
        stored = study.user_attrs.get(SPEC_ATTR)
        if stored is not None:
            break
        if time.monotonic() > deadline:
            raise ValueError(f"study {name!r} exists but was never set up by its creator")
        time.sleep(0.5)
    found = SweepSpec.from_json(stored)
    if spec is not None and found != spec:
        raise ValueError(
            f"study {name!r} already exists with a different sweep; give no --param/--preset "
            "to join it, or choose another --study"
        )
    study.sampler = _sampler(found)
    return study, found


def _sampler(spec: SweepSpec) -> optuna.samplers.BaseSampler:
    if spec.kind == "search" and spec.sampler == "random":
        return optuna.samplers.RandomSampler(seed=spec.seed)
    return optuna.samplers.TPESampler(seed=spec.seed)


# ----------------------------------------------------------------------------- workers


@dataclass
class WorkerReport:
    """What one worker did."""

    completed: list[int] = field(default_factory=list)  # trial numbers it finished
    failed: list[int] = field(default_factory=list)  # diverged (non-finite loss)
    requeued: list[int] = field(default_factory=list)  # dead trials it queued again


def _identity() -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid()}


def _is_dead(trial: FrozenTrial, now: float) -> bool:
    beat = trial.user_attrs.get("heartbeat")
    who = trial.user_attrs.get("worker") or {}
    if who.get("host") == socket.gethostname() and isinstance(who.get("pid"), int):
        try:
            os.kill(who["pid"], 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            pass
    if beat is None:  # popped but never started: judge by its start time
        start = trial.datetime_start.timestamp() if trial.datetime_start else now
        return now - start > STALE_AFTER
    return now - float(beat) > STALE_AFTER


def requeue_dead(study: optuna.Study) -> list[int]:
    """Fail running trials whose worker is gone and queue their points again.

    Of several workers finding the same dead trial, only the one whose state change
    succeeds queues it again.
    """
    storage, done = study._storage, []
    now = time.time()
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not _is_dead(t, now):
            continue
        try:
            storage.set_trial_user_attr(t._trial_id, "dead", True)
            if not storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:
            continue
        point = t.user_attrs.get("point")
        if point is None:  # a sampled trial: run the same parameters again
            point = {k: _json_value(v) for k, v in t.params.items()}
        study.enqueue_trial({}, user_attrs={"point": point, "retry_of": t.number})
        done.append(t.number)
    return done


class StaleTrialError(ValueError):
    """A trial's run directory holds a run of another configuration."""


def check_trial_dir(run_dir: Path, config: TrainConfig) -> None:
    """Raise :class:`StaleTrialError` when ``run_dir`` holds a run (finished or not)
    whose saved configuration differs from ``config``: its results or checkpoint
    belong to another experiment (a different base config in the same sweep folder)."""
    if not (run_dir / "config.json").is_file():
        return
    saved = load_run_config(run_dir)
    if saved == config:
        return
    ours, theirs = config.to_dict(), saved.to_dict()
    diff = ", ".join(f"{k}: {theirs[k]} there, {ours[k]} here" for k in ours if ours[k] != theirs[k])
    raise StaleTrialError(
        f"trial folder {run_dir} holds a run of another configuration ({diff}); it is not "
        "reused: delete that folder, or run this sweep in another folder"
    )


@contextlib.contextmanager
def claim_lock(url: str) -> Iterator[None]:
    """Hold an exclusive lock while a worker of a SQLite study claims a trial.

    Optuna takes a waiting trial by reading its row ``FOR UPDATE`` and then changing
    its state; SQLite ignores ``FOR UPDATE``, so two workers can both read a trial as
    waiting and both start it (and both queue a dead trial again). All workers of a
    SQLite study run on one machine (SQLite is not for network file systems), so an
    exclusive lock on ``<database>.lock`` makes claiming atomic. Server databases lock
    the row themselves, and the journal storage orders its writes: no lock for those.
    """
    prefix = "sqlite:///"
    db = url[len(prefix) :]
    if not url.startswith(prefix) or db in ("", ":memory:") or sys.platform == "win32":
        yield
        return
    import fcntl

    with open(Path(db + ".lock"), "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _pop_waiting(study: optuna.Study) -> optuna.Trial | None:
    """Take one waiting trial, atomically: no two workers get the same one."""
    storage = study._storage
    for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        try:
            if storage.set_trial_state_values(t._trial_id, state=TrialState.RUNNING):
                return optuna.Trial(study, t._trial_id)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue
    return None


def _search_budget_left(study: optuna.Study, spec: SweepSpec) -> bool:
    counted = [t for t in study.get_trials(deepcopy=False) if not t.user_attrs.get("dead")]
    return len(counted) < spec.trials


def _suggest(trial: optuna.Trial, spec: SweepSpec) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for name, r in spec.ranges.items():
        if r["kind"] == "int":
            params[name] = trial.suggest_int(name, int(r["low"]), int(r["high"]))
        else:
            params[name] = trial.suggest_float(name, r["low"], r["high"], log=r["kind"] == "log")
    for name, values in spec.choices.items():
        keyed = {json.dumps(v): v for v in values}
        params[name] = keyed[trial.suggest_categorical(name, list(keyed))]
    return params


@contextlib.contextmanager
def _heartbeat(study: optuna.Study, trial_id: int) -> Iterator[None]:
    storage = study._storage
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(HEARTBEAT):
            with contextlib.suppress(Exception):  # a missed beat is retried next time
                storage.set_trial_user_attr(trial_id, "heartbeat", time.time())

    storage.set_trial_user_attr(trial_id, "worker", _identity())
    storage.set_trial_user_attr(trial_id, "heartbeat", time.time())
    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def run_worker(
    sweep_dir: str | os.PathLike[str],
    storage_url: str | None = None,
    study_name: str = "sweep",
    spec: SweepSpec | None = None,
    *,
    data_dir: str | None = None,
    threads: int = 0,
    progress: bool | None = None,
    max_trials: int | None = None,
    poll: float = 2.0,
) -> WorkerReport:
    """Run trials of the study until none is left (or ``max_trials`` are done).

    Creates the study from ``spec`` if it does not exist, else joins it. Each trial
    trains ``SWEEP_DIR/trials/<point>`` (resuming it if a previous attempt left a
    checkpoint) and reports its final validation top-1 to the study, with train,
    validation and test top-1 and the learning curve as user attributes.
    """
    sweep_dir = Path(sweep_dir)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    url = storage_url or default_storage(sweep_dir)
    storage = open_storage(url)
    study, spec = open_study(storage, study_name, spec)
    if not (sweep_dir / "sweep.json").exists():
        atomic_write_json(
            sweep_dir / "sweep.json", {"storage": url, "study": study_name, "spec": spec.__dict__}
        )
    if threads > 0:
        import torch

        torch.set_num_threads(threads)
    report = WorkerReport()
    while max_trials is None or len(report.completed) + len(report.failed) < max_trials:
        with claim_lock(url):
            report.requeued += requeue_dead(study)
            trial = _pop_waiting(study)
            if trial is None and spec.kind == "search" and _search_budget_left(study, spec):
                trial = study.ask()
        if trial is None:
            running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            if not running:
                break
            time.sleep(poll)  # others are working; their trials may still die and come back
            continue
        point = trial.user_attrs.get("point")
        if point is None:
            point = _suggest(trial, spec)
            trial.set_user_attr("point", {k: _json_value(v) for k, v in point.items()})
        _run_trial(study, trial, point, spec, sweep_dir, data_dir, progress, report)
        if progress is not False:
            done = trial.number in report.completed
            outcome = "finished" if done else "diverged (non-finite loss)"
            print(f"trial {trial.number} {point_key(point)}: {outcome}", flush=True)
    return report


def _run_trial(
    study: optuna.Study,
    trial: optuna.Trial,
    point: dict[str, Any],
    spec: SweepSpec,
    sweep_dir: Path,
    data_dir: str | None,
    progress: bool | None,
    report: WorkerReport,
) -> None:
    run_dir = sweep_dir / "trials" / point_key(point)
    config = TrainConfig.from_saved({**spec.base, **point})
    try:
        check_trial_dir(run_dir, config)
    except StaleTrialError as e:
        # Fail this attempt and queue the point again, so that the sweep runs it once the
        # folder is cleared; then stop the worker with the reason.
        trial.set_user_attr("error", str(e))
        trial.set_user_attr("stale", True)
        study.tell(trial, state=TrialState.FAIL)
        study.enqueue_trial({}, user_attrs={"point": point, "retry_of": trial.number})
        raise
    with _heartbeat(study, trial._trial_id):
        trial.set_user_attr("run_dir", str(run_dir.resolve()))
        try:
            summary_path = run_dir / "summary.json"
            if summary_path.is_file():  # finished before, under an earlier attempt
                summary = json.loads(summary_path.read_text())
                metrics = json.loads((run_dir / "metrics.json").read_text())
            else:
                resume = (run_dir / "checkpoint.pt").is_file()
                result = train(config, run_dir, resume=resume, data_dir=data_dir, progress=progress)
                summary, metrics = result.summary, result.metrics
        except NonFiniteLossError as e:
            trial.set_user_attr("error", str(e))
            study.tell(trial, state=TrialState.FAIL)
            report.failed.append(trial.number)
            return
        # Any other exception (Ctrl-C, a bug) leaves the trial running: it is found
        # dead and queued again, and its run directory resumes from its last epoch.
        trial.set_user_attr("train_top1", summary["train_top1"])
        trial.set_user_attr("val_top1", summary["val_top1"])
        trial.set_user_attr("test_top1", summary.get("test_top1"))
        trial.set_user_attr("seconds", summary.get("seconds"))
        trial.set_user_attr("curve", [m["val_top1"] for m in metrics])
        trial.set_user_attr("train_curve", [m["train_top1"] for m in metrics])
        study.tell(trial, float(summary["val_top1"]))
    report.completed.append(trial.number)


# ----------------------------------------------------------------------------- results


@dataclass(frozen=True)
class TrialResult:
    number: int
    point: dict[str, Any]
    train_top1: float
    val_top1: float
    test_top1: float | None
    seconds: float | None
    curve: list[float]
    train_curve: list[float]


@dataclass(frozen=True)
class SweepResults:
    """Finished trials of a sweep and what is needed to plot them."""

    spec: SweepSpec
    trials: list[TrialResult]  # sorted by validation top-1, best first
    failed: list[dict[str, Any]]  # points whose training diverged
    pending: int  # trials queued or running

    @property
    def baseline(self) -> TrialResult | None:
        return next((t for t in self.trials if not t.point), None)

    def varied(self) -> list[str]:
        """Hyperparameters the sweep varies, in first-seen order."""
        names: list[str] = []
        for p in self.spec.points:
            names += [k for k in p if k not in names]
        names += [k for k in [*self.spec.ranges, *self.spec.choices] if k not in names]
        return names

    def series(self, name: str) -> list[TrialResult]:
        """Trials that show how ``name`` matters: for presets, the points about ``name``
        (first key) and the baseline; for grids and searches, every trial."""
        if self.spec.kind == "preset":
            return [t for t in self.trials if not t.point or next(iter(t.point)) == name]
        return [t for t in self.trials if name in t.point]

    def value(self, t: TrialResult, name: str) -> Any:
        return t.point.get(name, self.spec.base.get(name))


def load_results(
    sweep_dir: str | os.PathLike[str] | None = None,
    storage_url: str | None = None,
    study_name: str | None = None,
) -> SweepResults:
    """Read a sweep's trials from its storage (located through ``sweep.json``).

    Raises:
        ValueError: no sweep there.
    """
    if sweep_dir is not None and (storage_url is None or study_name is None):
        meta_path = Path(sweep_dir) / "sweep.json"
        if not meta_path.is_file():
            raise ValueError(f"{sweep_dir} is not a sweep directory (no sweep.json)")
        meta = json.loads(meta_path.read_text())
        storage_url = storage_url or meta["storage"]
        study_name = study_name or meta["study"]
    if storage_url is None or study_name is None:
        raise ValueError("give a sweep directory, or --storage and --study")
    study, spec = open_study(open_storage(storage_url), study_name, None, wait=0)
    done, failed, pending = [], [], 0
    for t in study.get_trials(deepcopy=False):
        if t.state == TrialState.COMPLETE:
            done.append(
                TrialResult(
                    t.number,
                    dict(t.user_attrs.get("point", {})),
                    float(t.user_attrs["train_top1"]),
                    float(t.user_attrs["val_top1"]),
                    t.user_attrs.get("test_top1"),
                    t.user_attrs.get("seconds"),
                    list(t.user_attrs.get("curve", [])),
                    list(t.user_attrs.get("train_curve", [])),
                )
            )
        elif t.state == TrialState.FAIL and not (
            t.user_attrs.get("dead") or t.user_attrs.get("stale")
        ):  # diverged; dead and stale attempts were queued again
            failed.append({"point": t.user_attrs.get("point"), "error": t.user_attrs.get("error")})
        elif t.state in (TrialState.WAITING, TrialState.RUNNING):
            pending += 1
    done.sort(key=lambda r: (-r.val_top1, r.number))
    return SweepResults(spec, done, failed, pending)


def results_rows(results: SweepResults) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the finished trials, best validation top-1 first; test top-1
    is shown for the best trial only (it is not used for selection)."""
    names = results.varied()
    header = ["rank", *names, "train top-1", "val top-1", "test top-1", "seconds"]
    rows = []
    for i, t in enumerate(results.trials):
        test = f"{t.test_top1:.4f}" if i == 0 and t.test_top1 is not None else ""
        seconds = f"{t.seconds:.0f}" if t.seconds else ""
        vals = [_fmt(results.value(t, n)) + ("" if n in t.point else " (base)") for n in names]
        rows.append([str(i + 1), *vals, f"{t.train_top1:.4f}", f"{t.val_top1:.4f}", test, seconds])
    return header, rows


def results_table(results: SweepResults) -> tuple[str, str]:
    """``(csv, markdown)`` of :func:`results_rows`."""
    header, rows = results_rows(results)
    csv_lines = [",".join(header)] + [
        ",".join(f'"{c}"' if "," in c else c for c in r) for r in rows
    ]
    md = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    md += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(csv_lines) + "\n", "\n".join(md) + "\n"


def _fmt(v: Any) -> str:
    if isinstance(v, list | tuple):
        return "x".join(map(str, v))
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


LOG_FIELDS = ("lr", "weight_decay")  # always drawn on a log axis when positive


def is_log_scale(values: Sequence[Any], name: str = "") -> bool:
    """Positive numbers that are learning rates or weight decays, or that span at
    least a factor of 10: draw on a log axis."""
    nums = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    if len(nums) != len(values) or not nums or min(nums) <= 0 or not math.isfinite(max(nums)):
        return False
    return name in LOG_FIELDS or max(nums) / min(nums) >= 10 - 1e-9
