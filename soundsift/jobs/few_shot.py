"""The few-shot protocol of ``soundsift eval --shots``: how much do k clips per class buy?

Every clip is embedded once. For each test fold and seed, k support clips per class are drawn
(seeded) from the *other* folds — from the rest of the same fold when the dataset has only one —
an adapter is fitted on their embeddings (``Adapter.from_embeddings``, the same fitting as
``soundsift teach``) and the test fold is classified with it. Zero-shot (k = 0) is scored on the
same test folds. Accuracies are reported as mean and standard deviation over folds and seeds.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from soundsift.core.adapter import Adapter
from soundsift.core.classifier import Classifier
from soundsift.core.fitting import Method


@dataclass(frozen=True)
class LabelledEmbeddings:
    vectors: np.ndarray
    targets: np.ndarray
    folds: np.ndarray
    failed: int


def embed_dataset(
    classifier: Classifier, paths: Sequence[str], labels: Sequence[str], folds: Sequence[str], classes: Sequence[str]
) -> LabelledEmbeddings:
    index = {name: position for position, name in enumerate(classes)}
    outcomes = classifier.pipeline.embed_all(list(paths))
    kept = [row for row, outcome in enumerate(outcomes) if isinstance(outcome, np.ndarray)]
    vectors = [outcome for outcome in outcomes if isinstance(outcome, np.ndarray)]
    return LabelledEmbeddings(
        vectors=np.stack(vectors).astype(np.float32),
        targets=np.array([index[labels[row]] for row in kept]),
        folds=np.array([folds[row] for row in kept]),
        failed=len(outcomes) - len(kept),
    )


def shots_table(
    classifier: Classifier,
    data: LabelledEmbeddings,
    classes: Sequence[str],
    *,
    shots: Sequence[int],
    seeds: int = 1,
    method: Method | Literal["auto"] = "auto",
    templates: Sequence[str] | None = None,
    progress: Any = None,
) -> dict[str, dict[str, Any]]:
    """``{"0": zero-shot, "k": k-shot, ...}``, each with mean, std, runs and (k > 0) the methods
    chosen and the mean fitting time; a k that leaves a class without test clips is skipped (said
    so in the row)."""
    text = classifier.label_encoder.zero_shot_labels(list(classes), templates=templates, multi_label=True, min_labels=1)
    test_folds = sorted(set(data.folds.tolist()))
    zero_shot = [
        _accuracy(data.vectors[data.folds == fold] @ text.embeddings.T, data.targets[data.folds == fold])
        for fold in test_folds
    ]
    table: dict[str, dict[str, Any]] = {"0": _summary(zero_shot)}
    for k in shots:
        if len(test_folds) == 1 and np.bincount(data.targets).min() <= k:
            table[str(k)] = {"skipped": f"one fold only, and some class has no more than {k} clips"}
            continue
        accuracies, methods, fit_s = [], Counter[str](), []
        for fold_number, fold in enumerate(test_folds):
            for seed in range(seeds):
                rng = np.random.default_rng([seed, fold_number, k])
                support, test = _split(data, fold, k, len(test_folds) == 1, rng)
                started = time.perf_counter()
                adapter = Adapter.from_embeddings(
                    classifier,
                    classes,
                    data.vectors[support],
                    data.targets[support],
                    method=method,
                    templates=templates,
                    seed=seed,
                )
                fit_s.append(time.perf_counter() - started)
                methods[adapter.method] += 1
                accuracies.append(_accuracy(adapter.head.similarities(data.vectors[test]), data.targets[test]))
                if progress is not None:
                    progress.update(1)
        table[str(k)] = {**_summary(accuracies), "methods": dict(methods), "fit_s_mean": float(np.mean(fit_s))}
    return table


def _split(
    data: LabelledEmbeddings, fold: str, k: int, single_fold: bool, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """k support rows per class from outside the test fold (or inside it, when it is the only
    one), and the test rows (never a support row)."""
    in_fold = data.folds == fold
    pool = in_fold if single_fold else ~in_fold
    support = np.concatenate(
        [
            rng.choice(rows, size=min(k, len(rows)), replace=False)
            for label in np.unique(data.targets)
            if len(rows := np.flatnonzero(pool & (data.targets == label)))
        ]
    )
    test = np.setdiff1d(np.flatnonzero(in_fold), support)
    return support, test


def _accuracy(similarities: np.ndarray, targets: np.ndarray) -> float:
    return float((similarities.argmax(axis=1) == targets).mean()) if len(targets) else 0.0


def _summary(accuracies: Sequence[float]) -> dict[str, Any]:
    return {"mean": float(np.mean(accuracies)), "std": float(np.std(accuracies)), "runs": len(accuracies)}
