"""Ensembles: several CLAP models answering one question together (``--model fused+general``).

Each input is decoded once and featurized by each member; each member embeds it and scores it
against the labels as embedded by its own text encoder (`Pipeline.scored`, the one scoring step).
The ensemble's score for a label is the mean of the members' probabilities, and its similarity the
mean of theirs. Every member's own top label is reported, with the share of members that agree with
the ensemble's answer: when they do not all agree the answer is ``uncertain``, whatever its
confidence, because models that disagree mean the sound is ambiguous for these labels.

Multi-label: a label is detected (or vetoed by one of its exclusions) when more than half of the
members say so. Adapters are taught on one model and are refused here.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from soundsift.core.audio import AudioInput
from soundsift.core.classifier import Classifier
from soundsift.core.labels import LabelsInput
from soundsift.core.pipeline import DecodedInput, Outcome, Pipeline, ScoredInput, batched, decoded_ahead
from soundsift.core.results import Classification, FailedInput, LabelScore, MemberAnswer
from soundsift.core.scoring import Decision, LabelThresholds, PreparedLabels, ScoringOptions, check_label_thresholds
from soundsift.core.settings import ModelSettings
from soundsift.errors import ConfigurationError, OptionsError

SEPARATOR = "+"


def ensemble_members(model: str, *, folders: bool = True) -> list[str]:
    """The models an ensemble name joins ('fused+general' gives ['fused', 'general']); any other
    name is one model. With ``folders``, a '+' in the name of an existing folder is part of that name
    (a server looks a request's name up among its models and never on its disk: ``folders=False``)."""
    if SEPARATOR not in model or (folders and os.path.exists(os.path.expanduser(model))):
        return [model]
    names = [name.strip() for name in model.split(SEPARATOR)]
    if not all(names):
        raise OptionsError(f"{model!r}: an ensemble names two or more models joined by '+', like fused+general")
    if len(set(names)) != len(names):
        raise OptionsError(f"{model!r}: an ensemble names each model once")
    return names


@dataclass(frozen=True)
class EnsembleLabels:
    """One label set prepared by each member's text encoder, in the members' order."""

    members: list[PreparedLabels]

    @property
    def names(self) -> list[str]:
        return self.members[0].names

    @property
    def warnings(self) -> list[str]:
        return self.members[0].warnings


def ensemble_scored(
    pipelines: Sequence[Pipeline],
    decoded: Sequence[DecodedInput],
    outcomes: Sequence[Outcome],
    labels: EnsembleLabels,
    decision: Decision,
    *,
    model_s: float = 0.0,
) -> ScoredInput:
    """One input's ensemble result from each member's decoded input and embedding (or error); the
    first member's error stands for the input when any member failed on it. ``model_s``: the
    members' model seconds for this input, together."""
    scored = [
        pipeline.scored(item, outcome, prepared, decision, model_s=model_s)
        for pipeline, item, outcome, prepared in zip(pipelines, decoded, outcomes, labels.members, strict=True)
    ]
    failed = next((item for item in scored if item.error is not None), None)
    if failed is not None:
        return failed
    answers = [item.result for item in scored if isinstance(item.result, Classification)]
    first = scored[0]
    return ScoredInput(first.index, first.source, combine(answers, decision), None, first.decode_s, first.model_s)


def combine(answers: Sequence[Classification], decision: Decision) -> Classification:
    """The ensemble's answer from its members' answers to the same labels (see the module's rules)."""
    first = answers[0]
    by_label = [{score.label: score for score in answer.scores} for answer in answers]
    names = [score.label for score in first.scores]
    score = _mean(by_label, names, "score")
    similarity = _mean(by_label, names, "similarity")
    vetoed, detected = _majority(by_label, names, "vetoed"), _majority(by_label, names, "detected")
    multi_label = first.detected_labels is not None
    order = sorted(names, key=lambda name: -score[name])
    eligible = [name for name in order if not vetoed[name] and (detected[name] or not multi_label)]
    top = eligible[0] if eligible else None
    confidence = score[top] if top is not None else 0.0
    margin = confidence - (score[eligible[1]] if len(eligible) > 1 else 0.0)
    agreement = sum(answer.top_label == top for answer in answers) / len(answers)
    silent = any(answer.silent for answer in answers)
    uncertain = (
        top is None or silent or agreement < 1.0 or confidence < decision.threshold or margin < decision.min_margin
    )
    first_scores = by_label[0]
    return Classification(
        source=first.source,
        top_label=top,
        confidence=confidence,
        margin=margin,
        uncertain=uncertain,
        scores=[
            LabelScore(
                label=name,
                score=score[name],
                similarity=similarity[name],
                detected=detected[name] if multi_label else None,
                prompt_text=first_scores[name].prompt_text,
                translated_as=first_scores[name].translated_as,
                vetoed=vetoed[name] if first_scores[name].vetoed is not None else None,
            )
            for name in order
        ],
        detected_labels=[name for name in order if detected[name]] if multi_label else None,
        duration_s=first.duration_s,
        silent=silent,
        model=SEPARATOR.join(answer.model for answer in answers),
        warnings=first.warnings,
        members=[MemberAnswer(model=a.model, top_label=a.top_label, confidence=a.confidence) for a in answers],
        agreement=agreement,
    )


def _mean(
    by_label: list[dict[str, LabelScore]], names: list[str], field: Literal["score", "similarity"]
) -> dict[str, float]:
    return {name: sum(getattr(scores[name], field) for scores in by_label) / len(by_label) for name in names}


def _majority(
    by_label: list[dict[str, LabelScore]], names: list[str], flag: Literal["detected", "vetoed"]
) -> dict[str, bool]:
    """Per label: more than half of the members set ``flag`` (None counts as not set)."""
    return {name: 2 * sum(bool(getattr(scores[name], flag)) for scores in by_label) > len(by_label) for name in names}


def load_classifier(settings: ModelSettings) -> Classifier | Ensemble:
    """The settings' model: an `Ensemble` when it names several joined by '+', else a `Classifier`."""
    if len(ensemble_members(settings.model)) > 1:
        return Ensemble.load(settings.model, settings)
    return Classifier(settings)


class Ensemble:
    """Two or more `Classifier`s answering together (see the module's rules)::

        ensemble = Ensemble.load("fused+general", device="cpu")
        result = ensemble.classify("dog.wav", "dog barking, siren, rain")
        result.members, result.agreement   # each model's top label; 1.0 when they all agree

    It classifies like a Classifier (`classify`, `classify_batch`, `iter_results`); detection,
    search and teaching take one model."""

    def __init__(self, members: Sequence[Classifier]) -> None:
        if len(members) < 2:
            raise ConfigurationError("an ensemble needs two or more models")
        if len({member.sample_rate for member in members}) > 1:
            raise ConfigurationError("the models of an ensemble must take audio at the same sample rate")
        if any(member.adapter is not None for member in members):
            raise ConfigurationError("an adapter is taught on one model; an ensemble takes zero-shot labels only")
        self.members = list(members)
        self.settings = members[0].settings
        self.adapter = None  # an ensemble never has one; the CLI asks any classifier the same way

    @classmethod
    def load(cls, model: str, settings: ModelSettings | None = None, **overrides: Any) -> Ensemble:
        """Each model an ensemble name joins (aliases allowed), loaded with the same settings."""
        base = settings.with_overrides(**overrides) if settings is not None else ModelSettings.build(**overrides)
        return cls([Classifier(base.with_overrides(model=name)) for name in ensemble_members(model)])

    @property
    def model_id(self) -> str:
        return SEPARATOR.join(member.model_id for member in self.members)

    @property
    def pipelines(self) -> list[Pipeline]:
        return [member.pipeline for member in self.members]

    def prepare_labels(
        self, labels: LabelsInput | None = None, *, templates: Sequence[str] | None = None, multi_label: bool = False
    ) -> EnsembleLabels:
        """The labels embedded by every member's text encoder, for reuse over many clips."""
        return EnsembleLabels(
            [member.prepare_labels(labels, templates=templates, multi_label=multi_label) for member in self.members]
        )

    def classify(
        self,
        audio: AudioInput,
        labels: LabelsInput | EnsembleLabels,
        *,
        templates: Sequence[str] | None = None,
        multi_label: bool = False,
        threshold: float | None = None,
        min_margin: float | None = None,
        label_thresholds: LabelThresholds = None,
        source: str | None = None,
    ) -> Classification:
        """One input; raises its error as `Classifier.classify` does."""
        options = ScoringOptions(
            tuple(templates) if templates else None, multi_label, threshold, min_margin, label_thresholds
        )
        prepared = self._ensure_prepared(labels, options)
        decoded = self.pipelines[0].decode_input_for(self.pipelines, audio, source=source)
        outcomes = [pipeline.embed_inputs([item])[0] for pipeline, item in zip(self.pipelines, decoded, strict=True)]
        scored = ensemble_scored(self.pipelines, decoded, outcomes, prepared, self.pipelines[0].decision(options))
        if scored.error is not None:
            raise scored.error
        assert isinstance(scored.result, Classification)
        return scored.result

    def classify_batch(
        self,
        audios: Iterable[AudioInput],
        labels: LabelsInput | EnsembleLabels,
        *,
        templates: Sequence[str] | None = None,
        multi_label: bool = False,
        threshold: float | None = None,
        min_margin: float | None = None,
        label_thresholds: LabelThresholds = None,
        errors: Literal["raise", "return"] = "raise",
    ) -> list[Classification | FailedInput]:
        """Many inputs with one label set, in input order (``errors`` as in `Classifier.classify_batch`)."""
        if errors not in ("raise", "return"):
            raise ValueError("errors must be 'raise' or 'return'")
        results: list[Classification | FailedInput] = []
        scored_inputs = self.iter_results(
            audios,
            labels,
            templates=templates,
            multi_label=multi_label,
            threshold=threshold,
            min_margin=min_margin,
            label_thresholds=label_thresholds,
        )
        for item in scored_inputs:
            if item.error is not None and errors == "raise":
                raise item.error
            results.append(item.result)
        return results

    def iter_results(
        self,
        audios: Iterable[AudioInput],
        labels: LabelsInput | EnsembleLabels,
        *,
        templates: Sequence[str] | None = None,
        multi_label: bool = False,
        threshold: float | None = None,
        min_margin: float | None = None,
        label_thresholds: LabelThresholds = None,
        batch_size: int | None = None,
        decode_workers: int = 0,
    ) -> Iterator[ScoredInput]:
        """Ensemble results as a lazy stream in input order, ``batch_size`` inputs embedded per model
        call of each member (with ``decode_workers`` threads decoding ahead when above 0, as
        `Classifier.iter_results`); a bad input becomes a FailedInput in its place."""
        options = ScoringOptions(
            tuple(templates) if templates else None, multi_label, threshold, min_margin, label_thresholds
        )
        prepared = self._ensure_prepared(labels, options)
        decision = self.pipelines[0].decision(options)
        size = batch_size or self.settings.batch_size
        first = self.pipelines[0]
        stream = decoded_ahead(
            audios,
            lambda audio, index: first.decode_input_for(self.pipelines, audio, index=index),
            decode_workers,
            prefetch=2 * size + decode_workers,
        )
        for decoded in batched(stream, size):
            started = time.perf_counter()
            per_member = [
                pipeline.embed_inputs([item[member] for item in decoded])
                for member, pipeline in enumerate(self.pipelines)
            ]
            ready = sum(items[0].features is not None for items in decoded)
            model_s = (time.perf_counter() - started) / max(1, ready)
            for position, items in enumerate(decoded):
                outcomes = [outcomes[position] for outcomes in per_member]
                yield ensemble_scored(self.pipelines, items, outcomes, prepared, decision, model_s=model_s)

    def _ensure_prepared(self, labels: LabelsInput | EnsembleLabels, options: ScoringOptions) -> EnsembleLabels:
        prepared = (
            labels
            if isinstance(labels, EnsembleLabels)
            else self.prepare_labels(labels, templates=options.templates, multi_label=options.multi_label)
        )
        check_label_thresholds(prepared.members[0], options.label_thresholds)
        return prepared
