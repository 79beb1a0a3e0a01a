"""TCAV (Kim et al., ICML 2018, "Interpretability Beyond Feature Attribution: Quantitative
Testing with Concept Activation Vectors"): does a human concept (stripes, dots) push a
class's logit up?

1. A **concept activation vector** (CAV) in a layer: the normal of a linear classifier
   that separates the layer's activations of the concept's images from those of random
   images (``method``: ``"sgd"``, scikit-learn's ``SGDClassifier`` with captum's
   settings; ``"logistic"``, ``LogisticRegression``; or ``"fastcav"``, Schmalwasser et
   al., ICML 2025: the difference of the two sets' mean activations, no training).
2. The **TCAV score** of a class: over images of the class, the fraction whose logit
   rises along the CAV (the directional derivative ``grad_A logit . v > 0``: the *sign
   count*), and captum's *magnitude*, the mean directional derivative.
3. **Significance**: one CAV per random set (``randoms``, two or more); as the null,
   each random set posing as the concept against the other random sets; a two-sided
   t-test of the concept's mean score as one more draw of the null's means
   (:func:`t_test`, which says why not Kim et al.'s two-sample test), with a Bonferroni
   correction over every (concept, layer, class) tested. Kim et al. ran hundreds of
   random sets; a handful gives a test of little power.

Activations and gradients are computed in batches of ``batch_size`` images, every layer
in one pass, where the model is; the CAVs are fitted on the CPU.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from convlens.core.device import model_device
from convlens.core.hooks import capture, eval_mode, frozen, get_layer

CAV_METHODS = ("sgd", "logistic", "fastcav")
MIN_IMAGES = 10  # images of a concept or random set, at the least
TEST_SPLIT = 0.33  # held out to measure a fitted CAV's accuracy, as captum does
LEVEL = 0.05  # the significance level, before the Bonferroni correction


@dataclass(frozen=True)
class TCAVScore:
    """The test of one concept for one class in one layer."""

    concept: str
    layer: str
    target: int
    sign_count: float  # mean over the runs of the fraction of images whose logit rises
    magnitude: float  # mean over the runs of the mean directional derivative (captum's)
    runs: tuple[float, ...]  # the sign count of each run (one CAV per random set)
    null: tuple[float, ...]  # each random set's mean sign count against the others
    p_value: float  # two-sided t-test of ``runs`` against ``null``
    p_corrected: float  # Bonferroni: times the number of tests, at most 1
    significant: bool  # p_corrected below LEVEL
    accuracy: float | None  # the CAVs' mean held-out accuracy


@dataclass(frozen=True)
class TCAVResult:
    """Every (concept, layer, class) tested, and how."""

    scores: list[TCAVScore]
    method: str
    tests: int  # the number of tests the correction divides the level by

    def table(self, class_names: Sequence[str] = ()) -> str:
        """A Markdown table: one row per test."""

        def name(c: int) -> str:
            return class_names[c] if c < len(class_names) else str(c)

        rows = [
            "| concept | layer | class | TCAV (sign count) | runs (sd) | random (sd) | "
            "magnitude | p (corrected) | significant |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for s in self.scores:
            rows.append(
                f"| {s.concept} | {s.layer} | {name(s.target)} | {s.sign_count:.3f} | "
                f"{np.std(s.runs):.3f} | {np.mean(s.null):.3f} ({np.std(s.null):.3f}) | "
                f"{s.magnitude:.3g} | {s.p_corrected:.3g} | {'yes' if s.significant else 'no'} |"
            )
        return "\n".join(rows)


def layer_outputs(
    model: nn.Module, x: torch.Tensor, layers: Sequence[str], batch_size: int = 64
) -> dict[str, torch.Tensor]:
    """``{layer: [N, F]}``: each layer's output for the images ``x``, flattened, on the
    CPU; every layer from one pass per batch of ``batch_size``."""
    device = model_device(model)
    out: dict[str, list[torch.Tensor]] = {layer: [] for layer in layers}
    with eval_mode(model), torch.no_grad(), capture(model, list(layers)) as store:
        for start in range(0, x.shape[0], batch_size):
            model(x[start : start + batch_size].to(device))
            for layer in layers:
                out[layer].append(store[layer].flatten(1).float().cpu())
    return {layer: torch.cat(parts) for layer, parts in out.items()}


def layer_gradients(
    model: nn.Module, x: torch.Tensor, layers: Sequence[str], target: int, batch_size: int = 64
) -> dict[str, torch.Tensor]:
    """``{layer: [N, F]}``: the gradient of class ``target``'s logit with respect to each
    layer's output, flattened, on the CPU; every layer from one forward and one
    backward pass per batch."""
    device = model_device(model)
    out: dict[str, list[torch.Tensor]] = {layer: [] for layer in layers}
    for start in range(0, x.shape[0], batch_size):
        xb = x[start : start + batch_size].to(device).detach().requires_grad_(True)
        with (
            eval_mode(model),
            frozen(model),
            torch.enable_grad(),
            capture(model, list(layers), detach=False) as store,
        ):
            logits = model(xb)
        grads = torch.autograd.grad(logits[:, target].sum(), [store[n] for n in layers])
        for layer, g in zip(layers, grads, strict=True):
            out[layer].append(g.flatten(1).float().cpu())
    return {layer: torch.cat(parts) for layer, parts in out.items()}


def concept_vector(
    concept: torch.Tensor, random: torch.Tensor, method: str = "sgd", seed: int = 0
) -> tuple[torch.Tensor, float | None]:
    """``(vector, held-out accuracy)``: the CAV separating the activations ``concept``
    (``[Nc, F]``) from ``random`` (``[Nr, F]``), pointing towards the concept."""
    if method == "fastcav":
        return concept.mean(0) - random.mean(0), None
    from sklearn.linear_model import LogisticRegression, SGDClassifier

    x = torch.cat([concept, random]).numpy()
    y = np.r_[np.ones(len(concept)), np.zeros(len(random))]
    order = np.random.default_rng(seed).permutation(len(y))
    held = order[: max(1, int(len(y) * TEST_SPLIT))]
    fit = order[len(held) :]
    if method == "sgd":  # captum's DefaultClassifier's settings
        classifier: object = SGDClassifier(alpha=0.01, max_iter=1000, tol=1e-3, random_state=seed)
    elif method == "logistic":
        classifier = LogisticRegression(max_iter=1000)
    else:
        raise ValueError(f"unknown CAV method {method!r}; choose one of {', '.join(CAV_METHODS)}")
    classifier.fit(x[fit], y[fit])  # type: ignore[attr-defined]
    accuracy = float((classifier.predict(x[held]) == y[held]).mean())  # type: ignore[attr-defined]
    vector = torch.from_numpy(np.asarray(classifier.coef_[0], dtype=np.float32))  # type: ignore[attr-defined]
    return vector, accuracy


def directional_scores(gradients: torch.Tensor, vector: torch.Tensor) -> tuple[float, float]:
    """``(sign count, magnitude)`` of a CAV for images with these logit gradients
    ``[N, F]``: the fraction of images whose derivative along ``vector`` is positive,
    and the mean derivative (captum's ``magnitude``)."""
    derivative = gradients @ vector
    return float((derivative > 0).float().mean()), float(derivative.mean())


def t_test(runs: Sequence[float], null: Sequence[float]) -> float:
    """Two-sided p-value of the concept's mean score (over its ``runs``) as one more draw
    from the ``null``: each random set's mean score as a concept against the other
    random sets. Student's t of a new observation against the null's mean and spread (its
    prediction interval), ``t = (mean(runs) - mean(null)) / (sd(null) sqrt(1 + 1/n))`` on
    ``n - 1`` degrees of freedom.

    Kim et al. compare the runs with random-against-random runs as two samples
    (``scipy.stats.ttest_ind``). A concept's runs all share its one image set, and so
    vary less than the null's, whose pairs differ in both sets: a set of random images
    posing as a concept then passes far more often than the level says: of 100 trials on
    fashion-cnn at 0.05, 23 with SGD's CAVs (2 here) and 40 with FastCAV's (0 here;
    ``benchmarks/tcav_null.py``)."""
    from scipy import stats

    base = np.asarray(null, dtype=np.float64)
    n = len(base)
    centre = float(np.mean(runs)) - float(base.mean())
    spread = float(base.std(ddof=1)) * math.sqrt(1 + 1 / n)
    if spread == 0:  # a null without spread: only an equal score is not significant
        return 1.0 if abs(centre) < 1e-12 else 0.0
    return float(2 * stats.t.sf(abs(centre) / spread, df=n - 1))


def check_sets(concepts: Mapping[str, torch.Tensor], randoms: Sequence[torch.Tensor]) -> None:
    """One line for each way the image sets cannot make a test."""
    if len(randoms) < 2:
        raise ValueError(
            f"TCAV needs 2 random sets or more (their CAVs are the null), got {len(randoms)}"
        )
    if not concepts:
        raise ValueError("no concept to test; give one or more concept image sets")
    sets = [*((f"concept {k!r}", v) for k, v in concepts.items()),
            *((f"random set {i}", r) for i, r in enumerate(randoms))]  # fmt: skip
    for what, images in sets:
        if images.ndim != 4 or images.shape[0] < MIN_IMAGES:
            n = images.shape[0] if images.ndim == 4 else 0
            raise ValueError(f"{what} has {n} images; TCAV needs {MIN_IMAGES} or more per set")


def tcav(
    model: nn.Module,
    inputs: Mapping[int, torch.Tensor],
    concepts: Mapping[str, torch.Tensor],
    randoms: Sequence[torch.Tensor],
    layers: Sequence[str],
    method: str = "sgd",
    batch_size: int = 64,
    progress: Callable[[], None] | None = None,
) -> TCAVResult:
    """Test each concept (``{name: images}``) for each class (``{class: its images}``) in
    each layer, against ``randoms`` (two or more sets of random images). Images are model
    inputs ``[N, C, H, W]``. ``progress()`` is called after each CAV
    (``(len(concepts) + len(randoms) - 1) * len(randoms) * len(layers)`` of them).

    Raises:
        ValueError: an unknown layer, class or CAV method; a set of fewer than
            ``MIN_IMAGES`` images; fewer than 2 random sets.
    """
    if method not in CAV_METHODS:
        raise ValueError(f"unknown CAV method {method!r}; choose one of {', '.join(CAV_METHODS)}")
    check_sets(concepts, randoms)
    for layer in layers:
        get_layer(model, layer)
    check_classes(model, inputs)
    acts = {name: layer_outputs(model, x, layers, batch_size) for name, x in concepts.items()}
    noise = [layer_outputs(model, r, layers, batch_size) for r in randoms]
    grads = {c: layer_gradients(model, x, layers, c, batch_size) for c, x in inputs.items()}
    tests = len(concepts) * len(layers) * len(inputs)
    scores = []
    n = len(noise)
    for layer in layers:
        # the null: each random set as a concept, against every other random set
        null = [[fitted(noise[j][layer], noise[i][layer], method, i, progress)
                 for i in range(n) if i != j] for j in range(n)]  # fmt: skip
        for name in concepts:
            cavs = [fitted(acts[name][layer], noise[i][layer], method, i, progress)
                    for i in range(n)]  # fmt: skip
            for c in inputs:
                scores.append(score(name, layer, c, grads[c][layer], cavs, null, tests))
    return TCAVResult(scores=scores, method=method, tests=tests)


def fitted(
    concept: torch.Tensor,
    random: torch.Tensor,
    method: str,
    seed: int,
    progress: Callable[[], None] | None,
) -> tuple[torch.Tensor, float | None]:
    """:func:`concept_vector`, then ``progress()``."""
    cav = concept_vector(concept, random, method, seed)
    if progress is not None:
        progress()
    return cav


def score(
    concept: str,
    layer: str,
    target: int,
    gradients: torch.Tensor,
    cavs: Sequence[tuple[torch.Tensor, float | None]],
    null: Sequence[Sequence[tuple[torch.Tensor, float | None]]],
    tests: int,
) -> TCAVScore:
    """The test of ``concept``'s CAVs (one per random set) for class ``target`` (logit
    gradients ``gradients``) against the ``null`` (for each random set, its CAVs against
    the other random sets), corrected for ``tests`` tests."""
    runs = [directional_scores(gradients, v) for v, _ in cavs]
    signs = [s for s, _ in runs]
    null_means = [float(np.mean([directional_scores(gradients, v)[0] for v, _ in row]))
                  for row in null]  # fmt: skip
    p = t_test(signs, null_means)
    corrected = min(1.0, p * tests)
    accuracies = [a for _, a in cavs if a is not None]
    return TCAVScore(
        concept=concept,
        layer=layer,
        target=target,
        sign_count=float(np.mean(signs)),
        magnitude=float(np.mean([m for _, m in runs])),
        runs=tuple(signs),
        null=tuple(null_means),
        p_value=p,
        p_corrected=corrected,
        significant=corrected < LEVEL,
        accuracy=float(np.mean(accuracies)) if accuracies else None,
    )


def check_classes(model: nn.Module, inputs: Mapping[int, torch.Tensor]) -> None:
    """One line for a class the model does not have."""
    if not inputs:
        raise ValueError("no class to test; give the images of one class or more")
    probe = next(iter(inputs.values()))[:1].to(model_device(model))
    with eval_mode(model), torch.no_grad():
        k = model(probe).shape[1]
    for c in inputs:
        if not 0 <= c < k:
            raise ValueError(f"class {c} is not a class of this model (0..{k - 1})")


__all__ = [
    "CAV_METHODS",
    "LEVEL",
    "MIN_IMAGES",
    "TCAVResult",
    "TCAVScore",
    "check_classes",
    "check_sets",
    "concept_vector",
    "directional_scores",
    "fitted",
    "layer_gradients",
    "layer_outputs",
    "score",
    "t_test",
    "tcav",
]
