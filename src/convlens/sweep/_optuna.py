"""Optuna, imported once for the sweep modules.

Optuna imports ``tqdm.auto`` at start-up, which in a Jupyter kernel without ipywidgets
warns "IProgress not found" although Optuna's own bars are never shown here.
"""

import warnings

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="IProgress not found")
    import optuna
    from optuna.trial import FrozenTrial, TrialState

__all__ = ["FrozenTrial", "TrialState", "optuna"]
