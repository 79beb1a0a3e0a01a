from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from convlens import sweep
from convlens.cli import main
from convlens.config import TrainConfig
from convlens.render import training_figures
from convlens.sweep import results as sweep_results
from convlens.sweep import worker
from tests.helpers import ROOT, needs_fashion

TINY = [
    "epochs=1",
    "train_subset=512",
    "val_size=512",
    "widths=4x8",
    "depth=1x1",
    "batch_size=128",
    "precision=fp32",
    "tta=false",
    "threads=1",
]


def tiny_base() -> TrainConfig:
    return TrainConfig().replace(**dict(t.split("=") for t in TINY))


def sets() -> list[str]:
    return [a for t in TINY for a in ("--set", t)]


def test_parse_param() -> None:
    assert sweep.parse_param("lr=0.1,0.2") == ("lr", [0.1, 0.2])
    assert sweep.parse_param("widths=8x16,16x32") == ("widths", [(8, 16), (16, 32)])
    assert sweep.parse_param("label-smoothing=0,0.1") == ("label_smoothing", [0.0, 0.1])
    assert sweep.parse_param("lr=log:1e-3:0.5") == ("lr", sweep.Range("log", 1e-3, 0.5))
    with pytest.raises(ValueError, match="unknown config field 'learning_rate'"):
        sweep.parse_param("learning_rate=0.1")
    with pytest.raises(ValueError, match="need 0 < LO < HI"):
        sweep.parse_param("lr=log:0:1")
    with pytest.raises(ValueError, match="optimizer=sgd,rmsprop|'rmsprop' is not one of"):
        sweep.make_spec(TrainConfig(), ["optimizer=sgd,rmsprop"])
    with pytest.raises(ValueError, match="optimizer is not numeric"):
        sweep.parse_param("optimizer=float:0:1")
    with pytest.raises(ValueError, match="expected NAME=V1,V2"):
        sweep.parse_param("lr")


def test_make_spec() -> None:
    grid = sweep.make_spec(TrainConfig(), ["lr=0.1,0.2", "optimizer=sgd,adam,adamw"])
    assert grid.kind == "grid" and len(grid.points) == 6
    assert {"lr": 0.2, "optimizer": "adamw"} in grid.points
    presets = sweep.make_spec(TrainConfig(), presets=["lr", "regularization", "lr"])
    assert presets.kind == "preset" and presets.points[0] == {}
    assert len(presets.points) == 1 + len(sweep.PRESETS["lr"]) + len(
        sweep.PRESETS["regularization"]
    )
    every = sweep.make_spec(TrainConfig(), presets=["all"])
    # The augmentation preset's point equal to the default (flip) is the baseline itself.
    assert {"augment": TrainConfig().augment} in sweep.PRESETS["augmentation"]
    assert {"augment": TrainConfig().augment} not in every.points
    assert len(every.points) == sum(len(p) for p in sweep.PRESETS.values())
    old_base = TrainConfig(augment="flip+crop")
    assert len(sweep.make_spec(old_base, presets=["augmentation"]).points) == 6
    assert {k for p in every.points for k in list(p)[:1]} >= {
        "augment", "init", "depth", "widths", "optimizer", "lr", "schedule",
        "weight_decay", "dropout", "label_smoothing",
    }  # fmt: skip
    search = sweep.make_spec(TrainConfig(), ["lr=log:1e-3:1", "optimizer=sgd,adam"], trials=5)
    assert search.kind == "search" and search.sampler == "tpe" and search.trials == 5
    assert sweep.SweepSpec.from_json(search.to_json()) == search
    with pytest.raises(ValueError, match="needs `trials`"):
        sweep.make_spec(TrainConfig(), ["lr=log:1e-3:1"])
    with pytest.raises(ValueError, match="do not mix"):
        sweep.make_spec(TrainConfig(), ["lr=log:1e-3:1"], ["init"], trials=3)
    with pytest.raises(ValueError, match="unknown preset"):
        sweep.make_spec(TrainConfig(), presets=["colour"])


def completed(storage: str) -> list[optuna.trial.FrozenTrial]:
    study = optuna.load_study(study_name="sweep", storage=storage)
    return study.get_trials(states=(TrialState.COMPLETE,))


@needs_fashion
def test_tiny_sweep_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sw"
    args = ["sweep", "--out", str(out), "--param", "lr=0.05,0.4", "--param", "init=kaiming,xavier"]
    assert main([*args, *sets()]) == 0
    text = capsys.readouterr().out
    assert "4 trials (grid)" in text and "best so far" in text
    runs = sorted(p.name for p in (out / "trials").iterdir())
    assert runs == [
        "init=kaiming,lr=0.05", "init=kaiming,lr=0.4", "init=xavier,lr=0.05", "init=xavier,lr=0.4"
    ]  # fmt: skip
    for run in runs:
        assert (out / "trials" / run / "model.pt").is_file()
    figures = out / "figures"
    for name in ("param-lr", "param-init", "curves"):
        assert (figures / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
        assert (figures / f"{name}.svg").read_text().lstrip().startswith("<?xml")
    rows = (figures / "results.csv").read_text().splitlines()
    assert rows[0] == "rank,lr,init,train top-1,val top-1,test top-1,seconds"
    vals = [float(r.split(",")[4]) for r in rows[1:]]
    assert len(vals) == 4 and vals == sorted(vals, reverse=True)
    assert rows[1].split(",")[5] != "" and all(r.split(",")[5] == "" for r in rows[2:])

    results = sweep_results.load_results(out)
    fig = training_figures.draw_sweep_param(results, "lr")
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    labels = [line.get_label() for line in ax.get_lines()]
    assert "training set (no augmentation) (best)" in labels and "validation (best)" in labels
    val_line = ax.get_lines()[labels.index("validation (best)")]
    best_per_lr = {
        lr: max(100 * t.val_top1 for t in results.trials if t.point["lr"] == lr)
        for lr in (0.05, 0.4)
    }
    assert list(val_line.get_xdata()) == [0.05, 0.4]
    assert list(val_line.get_ydata()) == pytest.approx([best_per_lr[0.05], best_per_lr[0.4]])
    init_ax = training_figures.draw_sweep_param(results, "init").axes[
        0
    ]  # in the sweep's order, not by score
    assert [t.get_text() for t in init_ax.get_xticklabels()] == ["kaiming", "xavier"]

    # Running the sweep again finds nothing to do and trains nothing.
    before = {r: (out / "trials" / r / "model.pt").stat().st_mtime_ns for r in runs}
    assert main([*args, *sets(), "--no-plot"]) == 0
    assert "this worker finished 0 trials" in capsys.readouterr().out
    assert before == {r: (out / "trials" / r / "model.pt").stat().st_mtime_ns for r in runs}
    assert len(completed(worker.default_storage(out))) == 4
    assert main(["plot", str(out)]) == 0


CLAIMER = """
import sys, time
import optuna
from convlens.sweep import worker
url, start = sys.argv[1], float(sys.argv[2])
study = optuna.load_study(study_name="s", storage=worker.open_storage(url))
time.sleep(max(0.0, start - time.time()))
while True:
    with worker.claim_lock(url):
        trial = worker._pop_waiting(study)
    if trial is None:
        break
    print(trial.number, flush=True)
"""


@pytest.mark.slow
def test_concurrent_workers_never_claim_the_same_sqlite_trial(tmp_path: Path) -> None:
    # SQLite ignores SELECT ... FOR UPDATE: without claim_lock, workers polling together
    # read the same trial as waiting and both start it.
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(study_name="s", storage=worker.open_storage(url))
    for i in range(40):
        study.enqueue_trial({}, user_attrs={"point": {"i": i}})
    start = str(time.time() + 3.0)  # all workers begin claiming together
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CLAIMER, url, start], env=env, stdout=subprocess.PIPE, text=True
        )
        for _ in range(4)
    ]
    claimed = [int(n) for p in procs for n in p.communicate(timeout=120)[0].split()]
    assert [p.returncode for p in procs] == [0] * 4
    assert sorted(claimed) == list(range(40))


@needs_fashion
@pytest.mark.slow
def test_two_workers_share_one_sqlite_study_without_duplicates(tmp_path: Path) -> None:
    out = tmp_path / "sw"
    args = ["sweep", "--out", str(out), "--param", "lr=0.05,0.1,0.2,0.4", "--param", "seed=0,1"]
    args += [*sets(), "--no-plot"]
    code = f"import sys; from convlens.cli import main; sys.exit(main({args!r}))"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    trials = completed(worker.default_storage(out))
    points = [json.dumps(t.user_attrs["point"], sort_keys=True) for t in trials]
    assert len(points) == 8 and len(set(points)) == 8
    workers = {t.user_attrs["worker"]["pid"] for t in trials}
    assert workers <= {p.pid for p in procs}
    done = sum(int(o.split("this worker finished ")[1].split()[0]) for o in outputs)
    assert done == 8


@needs_fashion
def test_a_killed_trial_is_queued_again_and_finished_ones_are_kept(tmp_path: Path) -> None:
    spec = sweep.make_spec(tiny_base(), ["lr=0.05,0.1,0.2"])
    storage = worker.default_storage(tmp_path)
    first = worker.run_worker(tmp_path, None, "sweep", spec, max_trials=1, progress=False)
    assert len(first.completed) == 1
    # A worker takes the next trial and dies: the trial stays RUNNING, owned by a pid
    # that no longer exists.
    study = optuna.load_study(study_name="sweep", storage=storage)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    trial = worker._pop_waiting(study)
    assert trial is not None
    trial.set_user_attr("worker", {"host": worker.socket.gethostname(), "pid": dead.pid})
    trial.set_user_attr("heartbeat", 0.0)
    killed_point = trial.user_attrs["point"]
    finished_run = Path(completed(storage)[0].user_attrs["run_dir"]) / "model.pt"
    stamp = finished_run.stat().st_mtime_ns

    second = worker.run_worker(tmp_path, None, "sweep", None, progress=False)
    assert second.requeued == [trial.number] and len(second.completed) == 2
    trials = completed(storage)
    assert sorted(t.user_attrs["point"]["lr"] for t in trials) == [0.05, 0.1, 0.2]
    retried = [t for t in trials if t.user_attrs.get("retry_of") == trial.number]
    assert len(retried) == 1 and retried[0].user_attrs["point"] == killed_point
    assert finished_run.stat().st_mtime_ns == stamp  # not trained again
    results = sweep_results.load_results(tmp_path)
    assert len(results.trials) == 3 and results.failed == [] and results.pending == 0


@needs_fashion
def test_a_new_study_never_reuses_trials_of_another_config(tmp_path: Path) -> None:
    # A 1-epoch sweep, its study deleted, then the same points with 2 epochs in the same
    # folder: the old trial folders must not be reused (nor resumed) as 2-epoch results.
    first = sweep.make_spec(tiny_base(), ["lr=0.1,0.2"])
    assert len(worker.run_worker(tmp_path, None, "sweep", first, progress=False).completed) == 2
    (tmp_path / "study.db").rename(tmp_path / "old.db")
    (tmp_path / "sweep.json").unlink()
    second = sweep.make_spec(tiny_base().replace(epochs=2), ["lr=0.1,0.2"])
    with pytest.raises(worker.StaleTrialError, match=r"lr=0.1 holds a run of another conf.*"
                       r"epochs: 1 there, 2 here"):  # fmt: skip
        worker.run_worker(tmp_path, None, "sweep", second, progress=False)
    saved = json.loads((tmp_path / "trials" / "lr=0.1" / "config.json").read_text())
    assert saved["epochs"] == 1  # untouched
    # Another study name in the same folder is refused the same way.
    with pytest.raises(worker.StaleTrialError, match="epochs: 1 there, 2 here"):
        worker.run_worker(tmp_path, None, "other", second, progress=False)
    # Once the stale folders are gone, the refused points run under the new config.
    import shutil

    shutil.rmtree(tmp_path / "trials")
    report = worker.run_worker(tmp_path, None, "sweep", None, progress=False)
    assert len(report.completed) == 2
    results = sweep_results.load_results(tmp_path)
    assert len(results.trials) == 2 and all(len(t.curve) == 2 for t in results.trials)
    assert json.loads((tmp_path / "trials" / "lr=0.1" / "config.json").read_text())["epochs"] == 2


@needs_fashion
def test_random_search_on_a_journal_file(tmp_path: Path) -> None:
    spec = sweep.make_spec(
        tiny_base(), ["lr=log:0.01:0.5", "init=kaiming,xavier"], trials=3, sampler="random"
    )
    url = f"journal:{tmp_path / 'journal.log'}"
    report = worker.run_worker(tmp_path / "a", url, "search", spec, progress=False)
    assert len(report.completed) == 3
    results = sweep_results.load_results(None, url, "search")
    assert len(results.trials) == 3
    assert all(0.01 <= t.point["lr"] <= 0.5 for t in results.trials)
    assert all(t.point["init"] in ("kaiming", "xavier") for t in results.trials)
    # A second worker joining the finished study has nothing left to do.
    assert worker.run_worker(tmp_path / "b", url, "search", None).completed == []


def test_joining_needs_the_same_sweep(tmp_path: Path) -> None:
    url = worker.default_storage(tmp_path)
    storage = worker.open_storage(url)
    worker.open_study(storage, "s", sweep.make_spec(tiny_base(), ["lr=0.1,0.2"]))
    with pytest.raises(ValueError, match="already exists with a different sweep"):
        worker.open_study(storage, "s", sweep.make_spec(tiny_base(), ["lr=0.1,0.3"]))
    with pytest.raises(ValueError, match="no study 'other'"):
        worker.open_study(storage, "other", None)
    with pytest.raises(ValueError, match="not a sweep directory"):
        sweep_results.load_results(tmp_path / "nothing")


@pytest.mark.skipif(
    not os.environ.get("CONVLENS_TEST_POSTGRES"), reason="CONVLENS_TEST_POSTGRES not set"
)
@needs_fashion
def test_two_workers_on_postgresql(tmp_path: Path) -> None:
    import psycopg

    server = os.environ["CONVLENS_TEST_POSTGRES"]
    db = f"convlens_test_{os.getpid()}"
    with psycopg.connect(server.replace("+psycopg", ""), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {db}")
        conn.execute(f"CREATE DATABASE {db}")
    url = server.rsplit("/", 1)[0] + "/" + db  # an empty database: workers create tables
    study = "pg"
    args = ["sweep", "--storage", url, "--study", study, "--param", "lr=0.05,0.1,0.2,0.4"]
    args += [*sets(), "--no-plot"]
    procs = []
    for i in range(2):
        code = (
            "import sys; from convlens.cli import main; "
            f"sys.exit(main({[*args, '--out', str(tmp_path / str(i))]!r}))"
        )
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        procs.append(subprocess.Popen([sys.executable, "-c", code], env=env))
    assert [p.wait(timeout=600) for p in procs] == [0, 0]
    trials = optuna.load_study(study_name=study, storage=url).get_trials(
        states=(TrialState.COMPLETE,)
    )
    lrs = sorted(t.user_attrs["point"]["lr"] for t in trials)
    assert lrs == [0.05, 0.1, 0.2, 0.4]


@needs_fashion
@pytest.mark.slow
def test_parallel_jobs_on_one_machine(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sw"
    args = ["sweep", "--out", str(out), "--param", "lr=0.05,0.1,0.2", "--jobs", "2"]
    assert main([*args, *sets(), "--no-plot"]) == 0
    trials = completed(worker.default_storage(out))
    assert sorted(t.user_attrs["point"]["lr"] for t in trials) == [0.05, 0.1, 0.2]
    assert len({t.user_attrs["worker"]["pid"] for t in trials}) <= 2
    assert "best so far" in capsys.readouterr().out
    assert main(["sweep", "--out", str(out), "--jobs", "0"]) == 2
    assert "--jobs must be >= 1" in capsys.readouterr().err


def test_plot_categorical_layouts_and_numbers_with_zero() -> None:
    base = TrainConfig().to_dict()
    spec = sweep.make_spec(TrainConfig(), presets=["architecture", "regularization"])

    def trial(n: int, point: dict[str, object], val: float) -> sweep_results.TrialResult:
        return sweep_results.TrialResult(n, point, val + 0.01, val, 0.9, 10.0, [val - 0.1, val], [])

    trials = [
        trial(0, {}, 0.91),
        trial(1, {"depth": [1, 1, 1]}, 0.89),
        trial(2, {"depth": [2, 2, 2]}, 0.92),
        trial(3, {"weight_decay": 0.0}, 0.90),
        trial(4, {"weight_decay": 0.002}, 0.905),
    ]
    results = sweep_results.SweepResults(spec, trials, [], 0)
    depth_ax = training_figures.draw_sweep_param(results, "depth").axes[0]
    assert [t.get_text() for t in depth_ax.get_xticklabels()] == ["1x1x1", "1x2x2", "2x2x2"]
    wd_ax = training_figures.draw_sweep_param(results, "weight_decay").axes[0]
    assert wd_ax.get_xscale() == "linear"  # 0 cannot go on a log axis
    assert [t.get_text() for t in wd_ax.get_xticklabels()] == ["0", "0.0005", "0.002"]
    val = next(line for line in wd_ax.get_lines() if line.get_label() == "validation")
    assert list(val.get_ydata()) == pytest.approx([90.0, 91.0, 90.5])
    assert base["depth"] == [1, 2, 2]


def test_every_preset_point_has_one_subject_whatever_its_key_order() -> None:
    from convlens.sweep.spec import subject

    for family, points in sweep.PRESETS.items():
        for point in points:
            name = subject(point)
            assert name is not None and name in point, (family, point)
            assert subject(dict(reversed(list(point.items())))) == name
    assert subject({"lr": 2e-3, "optimizer": "adam", "weight_decay": 0.0}) == "optimizer"
    assert subject({}) is None
