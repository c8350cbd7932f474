"""Few-shot heads on frozen CLAP embeddings: the arithmetic behind `soundsift teach`.

Everything here works on unit embeddings that are already computed, so fitting takes a fraction
of a second for hundreds of clips. Three methods, each starting from the zero-shot text
embeddings so that a handful of clips can only move the answer away from zero-shot as far as
the examples justify:

- ``prototype`` — each class vector is the text embedding blended with the mean of its clips
  (training-free; ``blend`` is the weight of the clips).
- ``tip`` — Tip-Adapter (Zhang et al., 2022): the text embeddings plus a cache of every example;
  a clip's similarity to a class gains ``alpha * mean(exp(-beta * (1 - cos)))`` over the class's
  examples (training-free; 1 shot already helps, and with no close example it is zero-shot).
- ``probe`` — a linear probe initialised at the text embeddings and pulled back toward them
  (cross-entropy + ``strength * |W - T|^2``): with few clips it stays near zero-shot, with many
  the data wins. Negative clips train an extra background row that is dropped afterwards.

`select` cross-validates every candidate on the examples (stratified folds) and keeps the best;
`calibrate` turns the out-of-fold similarities into a softmax temperature and a per-class
acceptance threshold (balanced accuracy of "this class" against every other clip, negatives
included), which is how "none of these" is decided later.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal

import numpy as np

Method = Literal["prototype", "tip", "probe"]
METHODS: tuple[Method, ...] = ("prototype", "tip", "probe")
CANDIDATES: tuple[tuple[Method, dict[str, float]], ...] = (
    ("prototype", {"blend": 0.5}),
    ("prototype", {"blend": 0.8}),
    ("prototype", {"blend": 0.95}),
    ("tip", {"alpha": 0.5, "beta": 5.5}),
    ("tip", {"alpha": 1.0, "beta": 5.5}),
    ("tip", {"alpha": 2.0, "beta": 5.5}),
    ("probe", {"strength": 0.01}),
    ("probe", {"strength": 0.1}),
    ("probe", {"strength": 1.0}),
)
ONE_SHOT_CHOICE: tuple[Method, dict[str, float]] = ("tip", {"alpha": 1.0, "beta": 5.5})
"""With one clip for some class there is nothing to cross-validate that class on: Tip-Adapter is
the published choice at one shot, and with no close example it falls back to zero-shot."""

PROBE_STEPS = 100
PROBE_LEARNING_RATE = 0.02
MAX_FOLDS = 5
LARGE_SET = 200
"""From this many examples on, three folds: each fold's held-out share is still large, and fitting
a probe on 50 labels x 16 clips stays within seconds."""
SCALES = np.geomspace(1.0, 300.0, 80)


@dataclass(frozen=True)
class Examples:
    """Unit embeddings of the taught clips, their class indices, the classes' zero-shot text
    embeddings, and the negative ("none of these") clips."""

    embeddings: np.ndarray
    targets: np.ndarray
    text: np.ndarray
    negatives: np.ndarray

    @property
    def classes(self) -> int:
        return len(self.text)

    def counts(self) -> np.ndarray:
        return np.bincount(self.targets, minlength=self.classes)

    def subset(self, keep: np.ndarray, keep_negatives: np.ndarray) -> Examples:
        return Examples(self.embeddings[keep], self.targets[keep], self.text, self.negatives[keep_negatives])


@dataclass(frozen=True)
class ExampleCache:
    """Tip-Adapter's cache: every example's embedding, owned by its class."""

    keys: np.ndarray
    owner: np.ndarray
    classes: int
    alpha: float
    beta: float

    @cached_property
    def _class_means(self) -> np.ndarray:
        """(keys, classes): averages each class's examples (built once; scoring calls this per clip)."""
        membership = np.zeros((len(self.keys), self.classes), dtype=np.float32)
        membership[np.arange(len(self.keys)), self.owner] = 1.0
        return membership / np.maximum(membership.sum(axis=0, keepdims=True), 1.0)

    def affinity(self, embeddings: np.ndarray) -> np.ndarray:
        """(B, classes): per class, alpha times the mean affinity of the clip to the class's examples."""
        if not len(self.keys):
            return np.zeros((len(embeddings), self.classes), dtype=np.float32)
        closeness = np.exp(-self.beta * (1.0 - embeddings @ self.keys.T))
        return (self.alpha * closeness @ self._class_means).astype(np.float32)


@dataclass(frozen=True)
class Head:
    """What scoring needs for the taught classes: a vector per class and, for ``tip``, the cache."""

    weights: np.ndarray
    cache: ExampleCache | None = None

    def similarities(self, embeddings: np.ndarray) -> np.ndarray:
        scores = embeddings @ self.weights.T
        if self.cache is not None:
            scores = scores + self.cache.affinity(embeddings)
        return np.asarray(scores, dtype=np.float32)


@dataclass(frozen=True)
class Calibration:
    logit_scale: float
    thresholds: np.ndarray


@dataclass(frozen=True)
class Selection:
    method: Method
    options: dict[str, float]
    cross_validated: bool
    accuracy: dict[str, float] = field(default_factory=dict)
    """Cross-validated accuracy of every candidate, keyed like ``prototype(blend=0.8)``."""
    out_of_fold: tuple[np.ndarray, np.ndarray] | None = None
    """The chosen candidate's out-of-fold similarities (examples, negatives), which `calibrate`
    reuses instead of fitting the same folds again."""


def fit(examples: Examples, method: Method, options: dict[str, float], *, logit_scale: float) -> Head:
    if method == "prototype":
        return Head(_unit(_blend(examples, options["blend"])))
    if method == "tip":
        cache = ExampleCache(examples.embeddings, examples.targets, examples.classes, options["alpha"], options["beta"])
        return Head(examples.text.copy(), cache)
    if method == "probe":
        return Head(_probe(examples, options["strength"], logit_scale))
    raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")


def describe(method: Method, options: dict[str, float]) -> str:
    return f"{method}({', '.join(f'{name}={value:g}' for name, value in options.items())})"


def select(examples: Examples, method: Method | Literal["auto"], *, logit_scale: float, seed: int = 0) -> Selection:
    """The method and options to fit with: the best cross-validated candidate (of ``method``, or of
    all for ``auto``); ties go to the simpler method. With a single clip in some class there are no
    folds to compare on, so ``auto`` takes Tip-Adapter and a named method its middle option."""
    candidates = [(name, options) for name, options in CANDIDATES if method in ("auto", name)]
    if examples.counts().min() < 2:
        chosen = ONE_SHOT_CHOICE if method == "auto" else candidates[len(candidates) // 2]
        return Selection(chosen[0], dict(chosen[1]), cross_validated=False)
    folds = stratified_folds(examples.targets, len(examples.negatives), seed=seed)
    accuracy: dict[str, float] = {}
    best: tuple[float, int, tuple[np.ndarray, np.ndarray] | None] = (-1.0, 0, None)
    for index, (name, options) in enumerate(candidates):
        held_out = out_of_fold(examples, folds, name, options, logit_scale=logit_scale)
        score = float((held_out[0].argmax(axis=1) == examples.targets).mean())
        accuracy[describe(name, options)] = round(score, 4)
        if score > best[0]:
            best = (score, index, held_out)
    name, options = candidates[best[1]]
    return Selection(name, dict(options), cross_validated=True, accuracy=accuracy, out_of_fold=best[2])


def calibrate(examples: Examples, selection: Selection, *, logit_scale: float, seed: int = 0) -> Calibration:
    """A softmax scale and per-class acceptance thresholds from out-of-fold similarities (those
    `select` computed for the chosen method, or the same folds fitted here when it compared none)."""
    held_out = selection.out_of_fold
    if held_out is None:
        folds = stratified_folds(examples.targets, len(examples.negatives), seed=seed)
        held_out = out_of_fold(examples, folds, selection.method, selection.options, logit_scale=logit_scale)
    similarities, negative_similarities = held_out
    return Calibration(
        logit_scale=_best_scale(similarities, examples.targets) if examples.classes > 1 else logit_scale,
        thresholds=_thresholds(similarities, examples.targets, negative_similarities),
    )


def stratified_folds(targets: np.ndarray, negatives: int, *, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Fold number of every example and every negative: each class (and the negatives) is dealt
    round-robin over the folds in a seeded order, so every fold sees every class it can."""
    counts = np.bincount(targets)
    most = 3 if len(targets) >= LARGE_SET else MAX_FOLDS
    count = int(min(most, max(2, counts.max(initial=0))))
    rng = np.random.default_rng(seed)
    example_folds = np.empty(len(targets), dtype=int)
    for label in np.unique(targets):
        members = rng.permutation(np.flatnonzero(targets == label))
        example_folds[members] = np.arange(len(members)) % count
    negative_folds = rng.permutation(np.arange(negatives) % count) if negatives else np.zeros(0, dtype=int)
    return [(example_folds == fold, negative_folds == fold) for fold in range(count)]


def out_of_fold(
    examples: Examples,
    folds: list[tuple[np.ndarray, np.ndarray]],
    method: Method,
    options: dict[str, float],
    *,
    logit_scale: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Similarities of every example and negative to every class, each from a head fitted without it."""
    similarities = np.zeros((len(examples.targets), examples.classes), dtype=np.float32)
    negative_similarities = np.zeros((len(examples.negatives), examples.classes), dtype=np.float32)
    for held_out, held_out_negatives in folds:
        head = fit(examples.subset(~held_out, ~held_out_negatives), method, options, logit_scale=logit_scale)
        similarities[held_out] = head.similarities(examples.embeddings[held_out])
        if held_out_negatives.any():
            negative_similarities[held_out_negatives] = head.similarities(examples.negatives[held_out_negatives])
    return similarities, negative_similarities


def _blend(examples: Examples, weight: float) -> np.ndarray:
    """Per class: (1 - weight) * text + weight * the unit mean of its clips (text alone without clips)."""
    vectors = examples.text.copy()
    for label in range(examples.classes):
        members = examples.embeddings[examples.targets == label]
        if len(members):
            vectors[label] = (1.0 - weight) * examples.text[label] + weight * _unit(members.mean(axis=0))
    return vectors


def _probe(examples: Examples, strength: float, logit_scale: float) -> np.ndarray:
    """Cross-entropy on ``logit_scale * x @ W.T`` plus ``strength * |W - T|^2``, by Adam from W = T.
    Negatives, if any, are a background class whose row is trained and then dropped."""
    # float32 throughout: twice the speed of float64, and the probe needs no more precision.
    anchor = examples.text.astype(np.float32)
    inputs = examples.embeddings.astype(np.float32)
    targets = examples.targets
    weights = anchor.copy()
    if len(examples.negatives):
        background = _unit(examples.negatives.mean(axis=0))[None, :]
        weights = np.vstack([weights, background])
        inputs = np.vstack([inputs, examples.negatives])
        targets = np.concatenate([targets, np.full(len(examples.negatives), examples.classes)])
    if not len(inputs):
        return anchor.astype(np.float32)
    truth = np.eye(len(weights), dtype=np.float32)[targets]
    moment, velocity = np.zeros_like(weights), np.zeros_like(weights)
    for step in range(1, PROBE_STEPS + 1):
        logits = logit_scale * inputs @ weights.T
        probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
        probabilities /= probabilities.sum(axis=1, keepdims=True)
        gradient = logit_scale * (probabilities - truth).T @ inputs / len(inputs)
        gradient[: len(anchor)] += 2.0 * strength * (weights[: len(anchor)] - anchor)
        moment = 0.9 * moment + 0.1 * gradient
        velocity = 0.999 * velocity + 0.001 * gradient**2
        corrected = (moment / (1 - 0.9**step)) / (np.sqrt(velocity / (1 - 0.999**step)) + 1e-8)
        weights -= PROBE_LEARNING_RATE * corrected
    return weights[: len(anchor)].astype(np.float32)


def _best_scale(similarities: np.ndarray, targets: np.ndarray) -> float:
    """The softmax scale with the least negative log-likelihood of the true classes (temperature scaling)."""
    rows = np.arange(len(targets))
    losses = []
    for scale in SCALES:
        logits = scale * similarities.astype(np.float64)
        logits -= logits.max(axis=1, keepdims=True)
        log_normaliser = np.log(np.exp(logits).sum(axis=1))
        losses.append(float((log_normaliser - logits[rows, targets]).mean()))
    return float(SCALES[int(np.argmin(losses))])


def _thresholds(similarities: np.ndarray, targets: np.ndarray, negatives: np.ndarray) -> np.ndarray:
    """Per class, the similarity that best separates its clips from every other clip (balanced
    accuracy; the lowest such cut on ties, then halfway down to the next lower other clip).
    A class with nothing to separate from accepts anything at or above its weakest example."""
    thresholds = np.zeros(similarities.shape[1], dtype=np.float32)
    for label in range(similarities.shape[1]):
        positive = similarities[targets == label, label]
        negative = np.concatenate([similarities[targets != label, label], negatives[:, label]])
        if not len(positive):
            thresholds[label] = np.inf
            continue
        if not len(negative):
            thresholds[label] = positive.min()
            continue
        candidates = np.unique(np.concatenate([positive, negative]))
        accepted_true = (positive[None, :] >= candidates[:, None]).mean(axis=1)
        rejected_false = (negative[None, :] < candidates[:, None]).mean(axis=1)
        best = candidates[int(np.argmax(accepted_true + rejected_false))]
        below = negative[negative < best]
        # Midway into the gap below the best cut, so a new example a little weaker than every
        # taught one is still accepted.
        thresholds[label] = (best + below.max()) / 2 if len(below) else best
    return thresholds


def _unit(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)
