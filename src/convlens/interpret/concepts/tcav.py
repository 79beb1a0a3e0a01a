"""TCAV (Kim et al., ICML 2018, "Interpretability Beyond Feature Attribution: Quantitative
Testing with Concept Activation Vectors"): does a human concept (stripes, dots) push a
class's logit up?

1. A **concept activation vector** (CAV) in a layer: the normal of a linear classifier
   that separates the layer's activations of the concept's images from those of random
   images (``method``: ``"logistic"``, L2-regularised logistic regression solved
   exactly, many CAVs at once (:func:`logistic_vectors`, scikit-learn's
   ``LogisticRegression``'s optimum); ``"sgd"``, scikit-learn's ``SGDClassifier`` with
   captum's settings (stochastic, and slower); or ``"fastcav"``, Schmalwasser et al.,
   ICML 2025: the difference of the two sets' mean activations, no training).
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
in one pass, where the model is and in the precision asked for (``--precision``; fp32
under ``auto``, not measured in bf16); the CAVs are fitted on the CPU, in fp32 and
float64.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from convlens.core.device import model_device
from convlens.core.hooks import capture, eval_mode, frozen, get_layer
from convlens.core.precision import in_precision

CAV_METHODS = ("sgd", "logistic", "fastcav")
MIN_IMAGES = 10  # images of a concept or random set, at the least
TEST_SPLIT = 0.33  # held out to measure a fitted CAV's accuracy, as captum does
LEVEL = 0.05  # the significance level, before the Bonferroni correction
# each random set of the null poses as a concept against this many others (all when fewer):
# the null's cost grows with the random sets, not with their square
NULL_PARTNERS = 10


def partners(j: int, n: int) -> list[int]:
    """The random sets that set ``j`` of ``n`` is tested against in the null: the next
    ``NULL_PARTNERS`` (or all the others), in a ring."""
    return [(j + step) % n for step in range(1, min(n - 1, NULL_PARTNERS) + 1)]


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


@in_precision("tcav")
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


@in_precision("tcav")
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


def split(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(fit, held)``: positions of ``n`` examples, ``TEST_SPLIT`` of them held out."""
    order = np.random.default_rng(seed).permutation(n)
    held = order[: max(1, int(n * TEST_SPLIT))]
    return order[len(held) :], held


def concept_vector(
    concept: torch.Tensor, random: torch.Tensor, method: str = "sgd", seed: int = 0
) -> tuple[torch.Tensor, float | None]:
    """``(vector, held-out accuracy)``: the CAV separating the activations ``concept``
    (``[Nc, F]``) from ``random`` (``[Nr, F]``), pointing towards the concept."""
    if method == "fastcav":
        return concept.mean(0) - random.mean(0), None
    if method == "logistic":
        return logistic_vectors([(concept, random, seed)])[0]
    if method != "sgd":
        raise ValueError(f"unknown CAV method {method!r}; choose one of {', '.join(CAV_METHODS)}")
    return sgd_vectors([(concept, random, seed)])[0]


def sgd_vectors(
    pairs: Sequence[tuple[torch.Tensor, torch.Tensor, int]],
    progress: Callable[[], None] | None = None,
) -> list[tuple[torch.Tensor, float | None]]:
    """The CAVs of scikit-learn's ``SGDClassifier`` with captum's settings (hinge loss,
    ``alpha=0.01``, ``max_iter=1000``, ``tol=1e-3``, ``random_state=seed``) for each
    ``(concept, random, seed)`` of ``pairs``, fitted on the examples' coordinates in the
    span of the examples rather than on their ``F`` features.

    SGD started at zero keeps ``w`` in the span of the examples it has seen, and reads the
    examples only through ``w . x``; so with ``x_i = Q z_i`` (``Q`` orthonormal, ``z_i =
    V sqrt(L)`` from the Gram matrix ``X X^T = V L V^T``) every step, the shuffles and the
    stopping rule are the same on the ``n`` coordinates ``z`` as on the ``F`` features,
    and ``w = Q w_z``: the same CAV (``tests/interpret/test_tcav.py``) at the cost of an
    ``n x n`` problem. One Gram matrix serves every pair; the fits run on two threads
    (scikit-learn's SGD releases the GIL)."""
    from concurrent.futures import ThreadPoolExecutor

    bank, rows = _bank(pairs)
    gram = (bank @ bank.T).double().numpy()
    jobs = []
    for concept, random, seed in pairs:
        index = torch.cat([rows(concept), rows(random)]).numpy()
        labels = np.r_[np.ones(len(concept)), np.zeros(len(random))]
        fit, held = split(len(labels), seed)
        jobs.append((index[fit], index[held], labels[fit], labels[held], seed))

    def solve(job: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]) -> Any:
        import sklearn
        from sklearn.linear_model import SGDClassifier

        fit, held, y, y_held, seed = job
        lam, vec = np.linalg.eigh(gram[np.ix_(fit, fit)])
        keep = lam > lam.max() * 1e-12
        classifier = SGDClassifier(alpha=0.01, max_iter=1000, tol=1e-3, random_state=seed)
        # the Gram matrix is finite and the settings are fixed: skip the checks (1 ms a fit)
        with sklearn.config_context(assume_finite=True, skip_parameter_validation=True):
            classifier.fit(vec[:, keep] * np.sqrt(lam[keep]), y)
        a = (vec[:, keep] / np.sqrt(lam[keep])) @ classifier.coef_[0]  # w = X_fit^T a
        decision = gram[np.ix_(held, fit)] @ a + classifier.intercept_[0]
        if progress is not None:
            progress()
        return a, float(((decision > 0) == y_held).mean())

    from threadpoolctl import threadpool_limits

    # two threads of small problems: BLAS inside them on one thread each, or they contend
    with threadpool_limits(1), ThreadPoolExecutor(2) as pool:
        solved = list(pool.map(solve, jobs))
    # w = X_fit^T a for every CAV in one sparse product (a CAV reads n rows of the bank)
    cav = torch.cat([torch.full((len(job[0]),), k, device="cpu") for k, job in enumerate(jobs)])
    row = torch.from_numpy(np.concatenate([job[0] for job in jobs]))
    value = torch.from_numpy(np.concatenate([a for a, _ in solved])).float()
    coefficients = torch.sparse_coo_tensor(
        torch.stack([cav, row]), value, (len(jobs), len(bank)), check_invariants=True
    )
    w = torch.sparse.mm(coefficients, bank)
    return [(w[k], accuracy) for k, (_, accuracy) in enumerate(solved)]


def _bank(
    pairs: Sequence[tuple[torch.Tensor, torch.Tensor, int]],
) -> tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
    """Every set of ``pairs`` once in one bank, and the rows of a set in it (a CAV's
    examples are rows of the bank: no copy per CAV)."""
    offsets: dict[int, int] = {}
    parts: list[torch.Tensor] = []
    for concept, random, _ in pairs:
        for t in (concept, random):
            if id(t) not in offsets:
                offsets[id(t)] = sum(len(p) for p in parts)
                parts.append(t)

    def rows(t: torch.Tensor) -> torch.Tensor:
        return torch.arange(offsets[id(t)], offsets[id(t)] + len(t), device="cpu")

    return torch.cat(parts), rows


def logistic_vectors(
    pairs: Sequence[tuple[torch.Tensor, torch.Tensor, int]], strength: float = 1.0
) -> list[tuple[torch.Tensor, float | None]]:
    """The CAVs of L2-regularised logistic regression (scikit-learn's
    ``LogisticRegression(C=strength)``: the same optimum) for each ``(concept, random,
    seed)`` of ``pairs``, many at once: with fewer examples than features, the weights are
    a combination of the examples (``w = X^T a``), so Newton's method runs on ``a`` and
    the intercept, ``n + 1`` unknowns, for a batch of CAVs in one solve per step.
    Each CAV holds out ``TEST_SPLIT`` of its examples (by ``seed``) to measure accuracy."""
    bank, rows = _bank(pairs)

    out: list[tuple[torch.Tensor, float | None]] = []
    for start in range(0, len(pairs), 32):  # 32 CAVs per batch: memory stays bounded
        group = pairs[start : start + 32]
        if len({(len(c), len(r)) for c, r, _ in group}) > 1:  # sets of different sizes
            out += [v for p in group for v in logistic_vectors([p], strength)]
            continue
        labels = torch.cat([torch.ones(len(group[0][0]), device="cpu"),
                            torch.zeros(len(group[0][1]), device="cpu")])  # fmt: skip
        index = torch.stack([torch.cat([rows(c), rows(r)]) for c, r, _ in group])  # [K, N]
        splits = [split(len(labels), seed) for _, _, seed in group]
        fit = torch.stack([torch.from_numpy(f) for f, _ in splits])
        x = bank[index.gather(1, fit)]  # [K, n, F]
        y = labels[fit].double()  # [K, n]
        gram = (x @ x.transpose(1, 2)).double()  # float32 products, a float64 solve
        a, b = newton_logistic(gram, y, 1.0 / strength)
        w = (x.transpose(1, 2) @ a.float()[..., None])[..., 0]  # [K, F]
        for k, (_, held) in enumerate(splits):
            predicted = (bank[index[k, held]] @ w[k] + float(b[k])) > 0
            out.append((w[k], float((predicted.float() == labels[held]).float().mean())))
    return out


def newton_logistic(
    gram: torch.Tensor, y: torch.Tensor, penalty: float, steps: int = 100
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(a [K, n], b [K])`` minimising ``sum_i logloss(y_i, (G a)_i + b) + penalty/2 a^T G
    a`` for each of the ``K`` Gram matrices ``gram`` ``[K, n, n]`` and labels ``y`` in
    {0, 1}: Newton's method, the step solving ``(W G + penalty I) da + W 1 db = -(p - y +
    penalty a)`` and ``1^T W G da + 1^T W 1 db = -sum(p - y)``."""
    k, n = y.shape
    a = torch.zeros(k, n, dtype=y.dtype, device=y.device)
    b = torch.zeros(k, dtype=y.dtype, device=y.device)
    eye = torch.eye(n, dtype=y.dtype, device=y.device)
    for _ in range(steps):
        p = torch.sigmoid((gram @ a[..., None])[..., 0] + b[:, None])
        w = p * (1 - p)
        system = torch.zeros(k, n + 1, n + 1, dtype=y.dtype, device=y.device)
        system[:, :n, :n] = w[..., None] * gram + penalty * eye
        system[:, :n, n] = w
        system[:, n, :n] = (w[..., None] * gram).sum(1)
        system[:, n, n] = w.sum(1)
        rhs = -torch.cat([p - y + penalty * a, (p - y).sum(1, keepdim=True)], 1)
        step = torch.linalg.solve(system, rhs)
        a, b = a + step[:, :n], b + step[:, n]
        if float(step.abs().max()) < 1e-10:
            break
    return a, b


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
    method: str = "logistic",
    batch_size: int = 64,
    progress: Callable[[], None] | None = None,
) -> TCAVResult:
    """Test each concept (``{name: images}``) for each class (``{class: its images}``) in
    each layer, against ``randoms`` (two or more sets of random images). Images are model
    inputs ``[N, C, H, W]``. ``progress()`` is called after each CAV
    (``(len(concepts) + min(len(randoms) - 1, NULL_PARTNERS)) * len(randoms) *
    len(layers)`` of them).

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
        # the null: each random set as a concept, against the next random sets
        pairs = [(noise[j][layer], noise[i][layer], i) for j in range(n) for i in partners(j, n)]
        pairs += [(acts[name][layer], noise[i][layer], i) for name in concepts for i in range(n)]
        cavs = fitted(pairs, method, progress)
        width = len(partners(0, n))
        null = [cavs[j * width : (j + 1) * width] for j in range(n)]
        for m, name in enumerate(concepts):
            own = cavs[n * width + m * n : n * width + (m + 1) * n]
            for c in inputs:
                scores.append(score(name, layer, c, grads[c][layer], own, null, tests))
    return TCAVResult(scores=scores, method=method, tests=tests)


def fitted(
    pairs: Sequence[tuple[torch.Tensor, torch.Tensor, int]],
    method: str,
    progress: Callable[[], None] | None,
) -> list[tuple[torch.Tensor, float | None]]:
    """The CAV of each ``(concept, random, seed)``, logistic ones many at once, with
    ``progress()`` after each."""
    if method == "logistic":
        cavs = []
        for start in range(0, len(pairs), 32):
            cavs += logistic_vectors(pairs[start : start + 32])
            for _ in pairs[start : start + 32]:
                if progress is not None:
                    progress()
        return cavs
    if method == "sgd":
        return sgd_vectors(pairs, progress)
    out = []
    for concept, random, seed in pairs:
        out.append(concept_vector(concept, random, method, seed))
        if progress is not None:
            progress()
    return out


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
    "NULL_PARTNERS",
    "TCAVResult",
    "TCAVScore",
    "check_classes",
    "check_sets",
    "concept_vector",
    "directional_scores",
    "fitted",
    "layer_gradients",
    "layer_outputs",
    "logistic_vectors",
    "newton_logistic",
    "partners",
    "score",
    "sgd_vectors",
    "split",
    "t_test",
    "tcav",
]
