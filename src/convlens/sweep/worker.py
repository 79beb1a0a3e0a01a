"""Sweep workers on Optuna: the study's storage, claiming queued trials, heartbeats,
re-queueing trials of dead workers, and training each trial's run directory."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from convlens.config import TrainConfig
from convlens.core.fileio import atomic_write_json
from convlens.sweep._optuna import FrozenTrial, TrialState, optuna
from convlens.sweep.spec import SweepSpec, json_value, point_key
from convlens.training.loop import NonFiniteLossError, resume, train
from convlens.training.rundir import load_run_config

STALE_AFTER = 120.0  # seconds without a heartbeat before a running trial counts as dead
HEARTBEAT = 10.0  # seconds between heartbeats
SPEC_ATTR = "convlens_spec"

optuna.logging.set_verbosity(optuna.logging.WARNING)


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
                    f"no study {name!r} in this storage; create it with a `spec`"
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
            f"study {name!r} already exists with a different sweep; join it without a "
            "`spec`, or choose another `study_name`"
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
            point = {k: json_value(v) for k, v in t.params.items()}
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
    diff = ", ".join(
        f"{k}: {theirs[k]} there, {ours[k]} here" for k in ours if ours[k] != theirs[k]
    )
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
    on_trial: Callable[[int, dict[str, Any], bool], None] | None = None,
) -> WorkerReport:
    """Run trials of the study until none is left (or ``max_trials`` are done).

    Creates the study from ``spec`` if it does not exist, else joins it. Each trial
    trains ``SWEEP_DIR/trials/<point>`` (resuming it if a previous attempt left a
    checkpoint) and reports its final validation top-1 to the study, with train,
    validation and test top-1 and the learning curve as user attributes.

    Args:
        threads: torch CPU threads for this worker (0: leave as they are).
        progress: show training progress bars (``None``: only on a terminal).
        on_trial: called after each trial with its number, its point and whether it
            finished (``False``: its training diverged).
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
            trial.set_user_attr("point", {k: json_value(v) for k, v in point.items()})
        _run_trial(study, trial, point, spec, sweep_dir, data_dir, progress, report)
        if on_trial is not None:
            on_trial(trial.number, point, trial.number in report.completed)
    return report


class WorkerFailedError(OSError):
    """A worker process of :func:`run_parallel` ended with an error."""


def run_parallel(
    sweep_dir: str | os.PathLike[str],
    storage_url: str,
    study_name: str,
    jobs: int,
    *,
    data_dir: str | None = None,
    poll: float = 2.0,
) -> None:
    """Run ``jobs`` workers of an existing study in parallel processes on this machine,
    splitting the CPU cores between them, with a progress bar of finished trials.

    Raises:
        ValueError: ``jobs`` < 1, or no such study.
        WorkerFailedError: a worker process failed.
    """
    import multiprocessing

    from convlens.core.progress import progress_bar

    if jobs < 1:
        raise ValueError(f"`jobs` must be >= 1, got {jobs}")
    study, spec = open_study(open_storage(storage_url), study_name, None, wait=0)
    total = len(spec.points) if spec.kind != "search" else spec.trials
    threads = max(1, (os.cpu_count() or 1) // jobs)
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(
            target=run_worker,
            args=(sweep_dir, storage_url, study_name, spec),
            kwargs={"data_dir": data_dir, "threads": threads, "progress": False},
        )
        for _ in range(jobs)
    ]
    for proc in procs:
        proc.start()
    try:
        with progress_bar(total=total, desc="trials", unit="trial") as bar:
            while any(proc.is_alive() for proc in procs):
                time.sleep(poll)
                done = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
                bar.update(done - bar.n)
    finally:
        for proc in procs:
            proc.join()
    bad = [proc.exitcode for proc in procs if proc.exitcode]
    if bad:
        raise WorkerFailedError(f"{len(bad)} of {jobs} sweep workers failed (exit codes {bad})")


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
                again = (run_dir / "checkpoint.pt").is_file()
                run = resume if again else functools.partial(train, config)
                result = run(run_dir, data_dir=data_dir, progress=progress)
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


__all__ = [
    "HEARTBEAT",
    "SPEC_ATTR",
    "STALE_AFTER",
    "StaleTrialError",
    "WorkerFailedError",
    "WorkerReport",
    "check_trial_dir",
    "claim_lock",
    "default_storage",
    "open_storage",
    "open_study",
    "requeue_dead",
    "run_parallel",
    "run_worker",
]
