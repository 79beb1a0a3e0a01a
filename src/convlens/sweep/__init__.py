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

from typing import Any

from convlens.sweep.spec import PRESETS, Range, SweepSpec, make_spec, parse_param, point_key

# Workers and results need Optuna (slow to import); they load on first use, so that
# reading a spec (the CLI's --help) stays fast.
_LAZY = {
    "run_worker": "worker",
    "default_storage": "worker",
    "open_storage": "worker",
    "open_study": "worker",
    "StaleTrialError": "worker",
    "WorkerReport": "worker",
    "run_parallel": "worker",
    "load_results": "results",
    "results_rows": "results",
    "results_table": "results",
    "SweepResults": "results",
    "TrialResult": "results",
}

__all__ = ["PRESETS", "Range", "SweepSpec", "make_spec", "parse_param", "point_key", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"convlens.sweep.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'convlens.sweep' has no attribute {name!r}")
