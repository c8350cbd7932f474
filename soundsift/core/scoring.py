"""Scoring: from one clip's audio embedding and a prepared label set to a Classification.

Scores are the softmax of the model's logit scale times the cosine similarities. A label with
exclusions is vetoed when any excluded sound is more similar to the audio than the label itself: its
score is still reported, but it cannot be the top label, which falls to the best label that is not
vetoed (or to none, and ``uncertain``). In multi-label mode every label is judged on its own against
a cosine-similarity threshold.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from soundsift.core.fitting import ExampleCache
from soundsift.core.labels import LabelClass
from soundsift.core.results import Classification, FailedInput, LabelScore
from soundsift.errors import LabelError, OptionsError, SoundsiftError

LabelThresholds = float | Mapping[str, float] | None
"""Multi-label thresholds: one similarity for every label, or per-label overrides."""


@dataclass(frozen=True)
class PreparedLabels:
    """Parsed classes with their (C, D) unit class embeddings, reusable across many clips.

    ``exclusion_embeddings`` (E, D) are the hidden competitors; ``exclusion_owner[e]`` is the class
    index exclusion e belongs to."""

    classes: list[LabelClass]
    embeddings: np.ndarray
    templates: tuple[str, ...]
    multi_label: bool
    prompts: list[list[str]]
    translated_as: list[list[str] | None]
    warnings: list[str]
    exclusion_embeddings: np.ndarray
    exclusion_owner: np.ndarray
    taught: int = 0
    """How many leading classes an adapter taught (their rows are the adapter's class vectors)."""
    cache: ExampleCache | None = None
    """The adapter's Tip-Adapter cache, adding to the taught classes' similarities."""
    accept_thresholds: np.ndarray | None = None
    """(taught,) calibrated similarity below which a taught label is 'none of these'."""
    logit_scale: float | None = None
    """The adapter's calibrated softmax scale, used instead of the model's."""
    adapter: str | None = None

    @property
    def names(self) -> list[str]:
        return [label.name for label in self.classes]

    def similarities(self, embedding: np.ndarray) -> np.ndarray:
        """(C,) similarity of one unit audio embedding to every class, the adapter's cache included."""
        similarities = self.embeddings @ embedding
        if self.cache is not None:
            similarities[: self.taught] += self.cache.affinity(embedding[None, :])[0]
        return similarities

    def default_threshold(self, index: int, label_threshold: float) -> float:
        """Multi-label: a taught label's calibrated threshold, any other label the request's."""
        if index < self.taught and self.accept_thresholds is not None:
            return float(self.accept_thresholds[index])
        return label_threshold

    @property
    def translations(self) -> dict[str, list[str]]:
        return {name: english for name, english in zip(self.names, self.translated_as) if english}


SCORING_HELP = {
    "templates": "prompt template with {} for the label",
    "multi_label": "judge every label on its own (several sounds may be present, or none)",
    "threshold": "top-1 confidence below this is uncertain (0 to 1)",
    "min_margin": "top-1 minus top-2 score below this is uncertain (0 to 1)",
    "label_thresholds": "multi-label: cosine similarity a label needs (-1 to 1)",
}
"""What each field of `ScoringOptions` means: the CLI's flag help and the HTTP form's field
descriptions are taken from here, so the three say the same."""


@dataclass(frozen=True)
class ScoringOptions:
    """One request's scoring choices, validated once when made and then passed along unchanged: the
    Classifier's keywords, the HTTP form, the CLI flags and the page each make one. None (or empty)
    means the classifier's own setting; each field is described in `SCORING_HELP`."""

    templates: tuple[str, ...] | None = None
    multi_label: bool = False
    threshold: float | None = None
    min_margin: float | None = None
    label_thresholds: float | Mapping[str, float] | None = None

    def __post_init__(self) -> None:
        if self.templates is not None:
            object.__setattr__(self, "templates", tuple(self.templates) or None)
        for name in ("threshold", "min_margin"):
            _check_range(name, getattr(self, name), 0.0, 1.0)
        if isinstance(self.label_thresholds, Mapping):
            for label, value in self.label_thresholds.items():
                _check_range(f"the threshold of {label!r}", value, -1.0, 1.0)
            object.__setattr__(self, "label_thresholds", dict(self.label_thresholds))
        else:
            _check_range("label_thresholds", self.label_thresholds, -1.0, 1.0)


def _check_range(name: str, value: float | None, low: float, high: float) -> None:
    if value is not None and not (isinstance(value, (int, float)) and low <= value <= high):
        raise OptionsError(f"{name} must be a number from {low:g} to {high:g}, not {value!r}")


@dataclass(frozen=True)
class Decision:
    """How a score set becomes a verdict: the thresholds in force for one request."""

    logit_scale: float
    threshold: float
    min_margin: float
    label_threshold: float
    label_thresholds: Mapping[str, float]

    @classmethod
    def build(
        cls,
        *,
        logit_scale: float,
        threshold: float,
        min_margin: float,
        label_threshold: float,
        label_thresholds: LabelThresholds = None,
    ) -> Decision:
        if isinstance(label_thresholds, (int, float)):
            return cls(logit_scale, threshold, min_margin, float(label_thresholds), {})
        return cls(logit_scale, threshold, min_margin, label_threshold, dict(label_thresholds or {}))


def score_embedding(
    embedding: np.ndarray,
    prepared: PreparedLabels,
    decision: Decision,
    *,
    source: str,
    duration_s: float,
    silent: bool,
    model: str,
) -> Classification:
    """Classify one clip from its (D,) unit audio embedding."""
    similarities = prepared.similarities(embedding)
    scores = softmax((prepared.logit_scale or decision.logit_scale) * similarities)
    order = np.argsort(-scores, kind="stable")
    vetoed = vetoed_labels(prepared, similarities, embedding)
    detected = detections(prepared, similarities, decision) if prepared.multi_label else None
    eligible = [i for i in order if not vetoed[i] and (detected is None or detected[i])]
    top = eligible[0] if eligible else None
    confidence = float(scores[top]) if top is not None else 0.0
    runner_up = float(scores[eligible[1]]) if len(eligible) > 1 else 0.0
    margin = confidence - runner_up
    unknown = none_of_these(prepared, similarities, top)
    uncertain = top is None or silent or unknown or confidence < decision.threshold or margin < decision.min_margin
    has_exclusions = set(prepared.exclusion_owner.tolist())
    return Classification(
        source=source,
        top_label=prepared.names[top] if top is not None else None,
        confidence=confidence,
        margin=margin,
        uncertain=uncertain,
        scores=[
            LabelScore(
                label=prepared.names[i],
                score=float(scores[i]),
                similarity=float(similarities[i]),
                detected=None if detected is None else bool(detected[i]),
                prompt_text=" | ".join(prepared.prompts[i]),
                translated_as=prepared.translated_as[i],
                vetoed=bool(vetoed[i]) if i in has_exclusions else None,
                taught=(i < prepared.taught) if prepared.adapter else None,
            )
            for i in order
        ],
        detected_labels=None if detected is None else [prepared.names[i] for i in order if detected[i]],
        duration_s=round(duration_s, 3),
        silent=silent,
        model=model,
        warnings=prepared.warnings,
        none_of_these=unknown,
        adapter=prepared.adapter,
    )


def none_of_these(prepared: PreparedLabels, similarities: np.ndarray, top: int | None) -> bool:
    """The best label is a taught one, but the clip is less similar to it than its calibrated
    threshold: the sound fits none of the taught labels."""
    if top is None or top >= prepared.taught or prepared.accept_thresholds is None:
        return False
    return bool(similarities[top] < prepared.accept_thresholds[top])


def check_label_thresholds(prepared: PreparedLabels, label_thresholds: LabelThresholds) -> None:
    """Per-label thresholds must name labels of the set (a typo would silently do nothing)."""
    if isinstance(label_thresholds, Mapping):
        unknown = set(label_thresholds) - set(prepared.names)
        if unknown:
            raise LabelError(f"thresholds given for unknown labels: {', '.join(sorted(unknown))}")


def detections(prepared: PreparedLabels, similarities: np.ndarray, decision: Decision) -> np.ndarray:
    limits = np.array(
        [
            decision.label_thresholds.get(name, prepared.default_threshold(index, decision.label_threshold))
            for index, name in enumerate(prepared.names)
        ]
    )
    return similarities >= limits


def vetoed_labels(prepared: PreparedLabels, similarities: np.ndarray, embedding: np.ndarray) -> np.ndarray:
    """True for each class that one of its excluded sounds beats on similarity to the audio."""
    vetoed = np.zeros(len(similarities), dtype=bool)
    if len(prepared.exclusion_owner):
        excluded = prepared.exclusion_embeddings @ embedding
        for owner, similarity in zip(prepared.exclusion_owner, excluded):
            vetoed[owner] |= similarity > similarities[owner]
    return vetoed


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max())
    return shifted / shifted.sum()


def failed_input(source: str, error: SoundsiftError) -> FailedInput:
    return FailedInput(source=error.source or source, error=error.code, message=str(error))
