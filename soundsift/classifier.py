"""soundsift.Classifier: the one library API that the CLI, HTTP server and web page call."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np

from soundsift.audio import AudioInput, DecodedAudio, describe_source, load_audio
from soundsift.backends import Backend, load_backend
from soundsift.config import Settings, validate_templates
from soundsift.errors import LabelError, SoundsiftError
from soundsift.features import MelFeaturizer
from soundsift.labels import LabelClass, LabelsInput, build_prompts, parse_labels
from soundsift.results import Classification, Detection, FailedInput, LabelScore
from soundsift.translate import Glossary


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

    @property
    def names(self) -> list[str]:
        return [label.name for label in self.classes]

    @property
    def translations(self) -> dict[str, list[str]]:
        return {name: english for name, english in zip(self.names, self.translated_as) if english}


class Classifier:
    """Zero-shot audio classifier on a CLAP checkpoint.

    Every keyword is a field of `soundsift.config.Settings`; anything not given comes from
    ``SOUNDSIFT_*`` environment variables, then the defaults::

        clf = Classifier()                                   # laion/clap-htsat-fused, auto device
        clf = Classifier(model="/models/clap", device="cpu")
        result = clf.classify("dog.wav", "dog barking, siren, rain")
    """

    def __init__(self, settings: Settings | None = None, **overrides: Any) -> None:
        self.settings = settings.model_copy(update=overrides) if settings else Settings(**overrides)
        self.backend: Backend = load_backend(self.settings)
        self.featurizer = MelFeaturizer(self.backend.mel_settings)
        self._text_cache: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()
        self._cache_lock = threading.Lock()

    @property
    def model_id(self) -> str:
        return self.backend.model_id

    @property
    def sample_rate(self) -> int:
        return self.backend.mel_settings.sampling_rate

    def classify(
        self,
        audio: AudioInput,
        labels: LabelsInput | PreparedLabels,
        *,
        templates: Sequence[str] | None = None,
        multi_label: bool = False,
        threshold: float | None = None,
        min_margin: float | None = None,
        label_thresholds: float | Mapping[str, float] | None = None,
        source: str | None = None,
    ) -> Classification:
        """Classify one input. Raises a SoundsiftError subclass on bad audio or labels."""
        prepared = self._ensure_prepared(labels, templates, multi_label)
        decoded = self.load(audio, source=source)
        return self.score(decoded, prepared, threshold, min_margin, label_thresholds)

    def classify_batch(
        self,
        audios: Iterable[AudioInput],
        labels: LabelsInput | PreparedLabels,
        *,
        templates: Sequence[str] | None = None,
        multi_label: bool = False,
        threshold: float | None = None,
        min_margin: float | None = None,
        label_thresholds: float | Mapping[str, float] | None = None,
        errors: str = "raise",
    ) -> list[Classification | FailedInput]:
        """Classify many inputs with one label set; audio is embedded ``batch_size`` at a time.

        ``errors="raise"`` stops at the first bad input; ``errors="return"`` puts a FailedInput in
        its place and carries on. Results are in input order.
        """
        if errors not in ("raise", "return"):
            raise ValueError("errors must be 'raise' or 'return'")
        prepared = self._ensure_prepared(labels, templates, multi_label)
        results: list[Classification | FailedInput] = []
        # One batch is decoded at a time, so memory does not grow with the number of inputs.
        for group in batched(audios, self.settings.batch_size):
            decoded: list[DecodedAudio | FailedInput] = []
            for audio in group:
                try:
                    decoded.append(self.load(audio))
                except SoundsiftError as error:
                    if errors == "raise":
                        raise
                    decoded.append(failed_input(describe_source(audio), error))
            embeddings = iter(self.embed_decoded([item for item in decoded if isinstance(item, DecodedAudio)]))
            results.extend(
                item
                if isinstance(item, FailedInput)
                else self.result_from_embedding(
                    item, next(embeddings), prepared, threshold, min_margin, label_thresholds
                )
                for item in decoded
            )
        return results

    def detect(self, audio: AudioInput, labels: LabelsInput, **options: Any) -> Detection:
        """When each sound happens in a (long) recording: sliding windows, per-window scores, events.

        Options: window_s (default 5), hop_s (default window_s / 2), threshold (0.5), off_threshold
        (default: threshold, i.e. no hysteresis), label_thresholds, smoothing_windows (1),
        min_duration_s (0), merge_gap_s (0), background (labels that never make events), templates,
        source, progress (callable(seconds_done, total_or_None)). See soundsift.segmentation.detect.
        """
        from soundsift.segmentation import detect

        return detect(self, audio, labels, **options)

    def prepare_labels(
        self,
        labels: LabelsInput,
        *,
        templates: Sequence[str] | None = None,
        multi_label: bool = False,
    ) -> PreparedLabels:
        """Parse labels and compute class embeddings once, for reuse over many clips."""
        chosen = tuple(validate_templates(list(templates))) if templates else tuple(self.settings.templates)
        classes = parse_labels(
            labels,
            max_labels=self.settings.max_labels,
            max_label_chars=self.settings.max_label_chars,
            min_labels=1 if multi_label else 2,
        )
        warnings: list[str] = []
        phrase_groups, translated_as = [], []
        for label in classes:
            phrases, english = self._english_phrases(label.phrases, warnings)
            phrase_groups.append(phrases)
            translated_as.append(english)
        prompts = [[p for phrase in phrases for p in build_prompts(phrase, chosen)] for phrases in phrase_groups]
        owners, exclusion_prompts = [], []
        for index, label in enumerate(classes):
            for excluded in label.exclusions:
                phrases, _ = self._english_phrases((excluded,), warnings)
                owners.append(index)
                exclusion_prompts.append([p for phrase in phrases for p in build_prompts(phrase, chosen)])
        embeddings = self._mean_embeddings(prompts + exclusion_prompts)
        return PreparedLabels(
            classes=classes,
            embeddings=embeddings[: len(classes)],
            templates=chosen,
            multi_label=multi_label,
            prompts=prompts,
            translated_as=translated_as,
            warnings=warnings,
            exclusion_embeddings=embeddings[len(classes) :],
            exclusion_owner=np.array(owners, dtype=int),
        )

    def _english_phrases(self, phrases: Sequence[str], warnings: list[str]) -> tuple[list[str], list[str] | None]:
        """Phrases for the text encoder, and the English used when translation changed anything."""
        if not self.settings.translate:
            return list(phrases), None
        english: list[str] = []
        changed = False
        for phrase in phrases:
            translation = self.glossary.translate(phrase)
            english.extend(p for p in translation.phrases if p not in english)
            changed = changed or translation.translated
            if translation.method == "untranslated":
                warnings.append(
                    f"label {phrase!r} ({translation.language} script) is not in the glossary; the model sees it "
                    "as written and may score it poorly. Add it with --glossary FILE or write it in English."
                )
            elif translation.method == "fuzzy":
                warnings.append(
                    f"label {phrase!r} was matched by similarity ({translation.score:.2f}) to "
                    f"{', '.join(translation.phrases)}"
                )
        return english, (english if changed else None)

    @cached_property
    def glossary(self) -> Glossary:
        translator = None
        if self.settings.translator:
            from soundsift.machine_translation import MachineTranslator

            translator = MachineTranslator(self.settings.translator)
        return Glossary.load([Path(path) for path in self.settings.glossary], translator=translator)

    def load(self, audio: AudioInput, *, source: str | None = None) -> DecodedAudio:
        """Decode and resample one input under this classifier's limits."""
        return load_audio(
            audio,
            self.sample_rate,
            max_duration_s=self.settings.max_duration_s,
            silence_db=self.settings.silence_db,
            source=source,
        )

    def score(
        self,
        decoded: DecodedAudio,
        prepared: PreparedLabels,
        threshold: float | None = None,
        min_margin: float | None = None,
        label_thresholds: float | Mapping[str, float] | None = None,
    ) -> Classification:
        """Classify already decoded audio."""
        (embedding,) = self.embed_decoded([decoded])
        return self.result_from_embedding(decoded, embedding, prepared, threshold, min_margin, label_thresholds)

    def embed_audio(self, audios: AudioInput | Sequence[AudioInput]) -> np.ndarray:
        """(N, D) L2-normalised audio embeddings; one input gives a (1, D) array."""
        items = [audios] if _is_single_audio(audios) else list(audios)
        return self.embed_decoded([self.load(audio) for audio in items])

    def embed_text(self, texts: str | Sequence[str]) -> np.ndarray:
        """(N, D) L2-normalised text embeddings of the texts exactly as given (no template)."""
        items = [texts] if isinstance(texts, str) else list(texts)
        return self._cached_text_embeddings(items)

    def embed_decoded(self, clips: Sequence[DecodedAudio]) -> np.ndarray:
        size = self.settings.batch_size
        batches = [
            self.backend.embed_audio(*self.featurizer([clip.samples for clip in clips[start : start + size]]))
            for start in range(0, len(clips), size)
        ]
        return np.concatenate(batches) if batches else np.zeros((0, 0), dtype=np.float32)

    def _ensure_prepared(
        self, labels: LabelsInput | PreparedLabels, templates: Sequence[str] | None, multi_label: bool
    ) -> PreparedLabels:
        if isinstance(labels, PreparedLabels):
            return labels
        return self.prepare_labels(labels, templates=templates, multi_label=multi_label)

    def _mean_embeddings(self, prompts: list[list[str]]) -> np.ndarray:
        """(G, D): per group, the normalised mean of its prompts' embeddings (one text-encoder call)."""
        flat = self._cached_text_embeddings([p for group in prompts for p in group])
        bounds = np.cumsum([0] + [len(group) for group in prompts])
        means = np.stack([flat[start:end].mean(axis=0) for start, end in pairwise(bounds)])
        return means / np.linalg.norm(means, axis=1, keepdims=True)

    def _cached_text_embeddings(self, texts: list[str]) -> np.ndarray:
        with self._cache_lock:
            known = {t: self._text_cache[(self.model_id, t)] for t in texts if (self.model_id, t) in self._text_cache}
            for text in known:
                self._text_cache.move_to_end((self.model_id, text))
        missing = [t for t in dict.fromkeys(texts) if t not in known]
        if missing:
            known.update(zip(missing, self.backend.embed_text(missing)))
            with self._cache_lock:
                for text in missing:
                    self._text_cache[(self.model_id, text)] = known[text]
                while len(self._text_cache) > self.settings.text_cache_size:
                    self._text_cache.popitem(last=False)
        return np.stack([known[t] for t in texts])

    def result_from_embedding(
        self,
        decoded: DecodedAudio,
        embedding: np.ndarray,
        prepared: PreparedLabels,
        threshold: float | None = None,
        min_margin: float | None = None,
        label_thresholds: float | Mapping[str, float] | None = None,
    ) -> Classification:
        """Score one clip's audio embedding (from `embed_decoded`) against prepared labels.

        Scores are the softmax of the model's logit scale times the cosine similarities. A label with
        exclusions is vetoed when any excluded sound is more similar to the audio than the label
        itself: its score is still reported, but it cannot be the top label, which falls to the best
        label that is not vetoed (or to none, and ``uncertain``)."""
        similarities = prepared.embeddings @ embedding
        scores = softmax(self.backend.logit_scale * similarities)
        order = np.argsort(-scores, kind="stable")
        vetoed = vetoed_labels(prepared, similarities, embedding)
        detected = self._detections(prepared, similarities, label_thresholds) if prepared.multi_label else None
        eligible = [i for i in order if not vetoed[i] and (detected is None or detected[i])]
        top = eligible[0] if eligible else None
        confidence = float(scores[top]) if top is not None else 0.0
        runner_up = float(scores[eligible[1]]) if len(eligible) > 1 else 0.0
        margin = confidence - runner_up
        uncertain = (
            top is None
            or decoded.silent
            or confidence < (self.settings.threshold if threshold is None else threshold)
            or margin < (self.settings.min_margin if min_margin is None else min_margin)
        )
        has_exclusions = set(prepared.exclusion_owner.tolist())
        return Classification(
            source=decoded.source,
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
                )
                for i in order
            ],
            detected_labels=None if detected is None else [prepared.names[i] for i in order if detected[i]],
            duration_s=round(decoded.duration_s, 3),
            silent=decoded.silent,
            model=self.model_id,
            warnings=prepared.warnings,
        )

    def _detections(
        self,
        prepared: PreparedLabels,
        similarities: np.ndarray,
        label_thresholds: float | Mapping[str, float] | None,
    ) -> np.ndarray:
        default = self.settings.label_threshold
        overrides: Mapping[str, float] = {}
        if isinstance(label_thresholds, (int, float)):
            default = float(label_thresholds)
        elif label_thresholds:
            unknown = set(label_thresholds) - set(prepared.names)
            if unknown:
                raise LabelError(f"thresholds given for unknown labels: {', '.join(sorted(unknown))}")
            overrides = label_thresholds
        limits = np.array([overrides.get(name, default) for name in prepared.names])
        return similarities >= limits


def batched(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    """Lists of up to ``size`` consecutive items (itertools.batched needs Python 3.12)."""
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


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


def _is_single_audio(audios: object) -> bool:
    return (
        isinstance(audios, (str, bytes, bytearray, tuple)) or hasattr(audios, "read") or hasattr(audios, "__fspath__")
    )
