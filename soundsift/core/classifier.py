"""soundsift.Classifier: the one library API that the CLI, HTTP server and web page call."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property
from itertools import pairwise
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np

from soundsift.backends import Backend, load_backend
from soundsift.core.adapter import PROBE_TEXT, Adapter, probe_signals
from soundsift.core.audio import AudioInput, AudioLimits, DecodedAudio, describe_source, is_array_input, load_audio
from soundsift.core.features import MelFeaturizer
from soundsift.core.labels import LabelLimits, LabelsInput, build_prompts, check_taught_labels, parse_labels
from soundsift.core.results import Classification, FailedInput
from soundsift.core.scoring import (
    Decision,
    LabelThresholds,
    PreparedLabels,
    check_label_thresholds,
    failed_input,
    score_embedding,
)
from soundsift.core.settings import ModelSettings, validate_templates
from soundsift.errors import LabelError, ProcessingError, SoundsiftError
from soundsift.i18n.glossary import Glossary

logger = logging.getLogger("soundsift")


@dataclass(frozen=True)
class ClipFeatures:
    """One clip's model input: (C, T, F) log-mel features and whether it is longer than the window.

    About 1 MB whatever the clip's length, so queues hold features, never long decoded audio."""

    features: np.ndarray
    is_longer: bool


@dataclass(frozen=True)
class ScoredInput:
    """One input's outcome from `Classifier.iter_results`, in input order, with what it cost."""

    index: int
    source: str
    result: Classification | FailedInput
    error: SoundsiftError | None
    decode_s: float
    model_s: float


Embedder = Callable[[Sequence[ClipFeatures]], list["np.ndarray | SoundsiftError"]]
"""Turns a batch of clip features into one (D,) embedding or one error per clip, in order."""


@dataclass(frozen=True)
class DecodedInput:
    """One input after decoding and featurizing (or the error that stopped it): what the model and
    the scoring need, without the decoded samples, so that waiting inputs hold ~1 MB each."""

    index: int
    source: str
    features: ClipFeatures | None
    duration_s: float
    silent: bool
    error: SoundsiftError | None
    decode_s: float


class Classifier:
    """Zero-shot audio classifier on a CLAP checkpoint.

    Every keyword is a field of `soundsift.core.settings.ModelSettings`; anything not given comes from
    ``SOUNDSIFT_*`` environment variables, then the defaults. Unknown names and bad values raise
    ConfigurationError::

        clf = Classifier()                                   # laion/clap-htsat-fused, auto device
        clf = Classifier(model="/models/clap", device="cpu")
        result = clf.classify("dog.wav", "dog barking, siren, rain")
        clf = Classifier(adapter="doorbell.adapter")         # taught labels join every request

    ``adapter`` (an `Adapter` or the path of an adapter file; also the ``adapter`` setting) is
    checked against this model's embeddings and refused when they differ.
    """

    def __init__(
        self,
        settings: ModelSettings | None = None,
        *,
        adapter: Adapter | str | os.PathLike[str] | None = None,
        **overrides: Any,
    ) -> None:
        self.settings: ModelSettings = (
            settings.with_overrides(**overrides) if settings is not None else ModelSettings.build(**overrides)
        )
        self.backend: Backend = load_backend(
            self.settings.backend,
            self.settings.model,
            device=self.settings.device,
            fp16=self.settings.fp16,
            quantize=self.settings.quantize,
            quantize_encoders=tuple(self.settings.quantize_encoders),
            threads=self.settings.threads,
        )
        self.featurizer = MelFeaturizer(self.backend.mel_settings)
        self._text_cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_lock = threading.Lock()
        if adapter is None and self.settings.adapter:
            adapter = self.settings.adapter
        if isinstance(adapter, (str, os.PathLike)):
            adapter = Adapter.load(adapter)
        self.adapter: Adapter | None = self.checked_adapter(adapter) if adapter is not None else None

    @property
    def model_id(self) -> str:
        return self.backend.model_id

    @property
    def sample_rate(self) -> int:
        return self.backend.mel_settings.sampling_rate

    @property
    def logit_scale(self) -> float:
        return self.backend.logit_scale

    def fingerprint(self) -> np.ndarray:
        """(4, D): this model's embeddings of three fixed probe sounds and a probe text. Adapters
        record it, and refuse a classifier whose fingerprint differs."""
        return self._fingerprint

    @cached_property
    def _fingerprint(self) -> np.ndarray:
        sounds = self.embed_audio([(signal, self.sample_rate) for signal in probe_signals(self.sample_rate)])
        return np.vstack([sounds, self.backend.embed_text([PROBE_TEXT])]).astype(np.float32)

    def checked_adapter(self, adapter: Adapter) -> Adapter:
        """The adapter, if its labels pass the rules every label set passes (LabelError otherwise,
        whoever wrote the file) and it was taught on a model with this model's embeddings (else
        AdapterMismatchError)."""
        check_taught_labels(
            adapter.labels,
            adapter.prompts,
            limits=self.label_limits,
            max_prompts=self.settings.max_synonyms * self.settings.max_templates,
            max_prompt_chars=self.settings.max_label_chars + self.settings.max_template_chars,
        )
        adapter.check_model(self.model_id, self.fingerprint())
        return adapter

    @property
    def audio_limits(self) -> AudioLimits:
        return AudioLimits(
            max_duration_s=self.settings.max_duration_s,
            min_duration_s=self.settings.min_duration_s,
            max_decoded_mb=self.settings.max_decoded_mb,
            max_channels=self.settings.max_channels,
        )

    # ---- classification -----------------------------------------------------------------------

    def classify(
        self,
        audio: AudioInput,
        labels: LabelsInput | PreparedLabels | None = None,
        *,
        adapter: Adapter | None = None,
        templates: Sequence[str] | None = None,
        multi_label: bool = False,
        threshold: float | None = None,
        min_margin: float | None = None,
        label_thresholds: LabelThresholds = None,
        source: str | None = None,
    ) -> Classification:
        """Classify one input. Raises a SoundsiftError subclass on bad audio or labels.

        ``labels`` are zero-shot labels; with an ``adapter`` (or the classifier's own) its taught
        labels are scored too, and ``labels`` may be left out."""
        prepared = self._ensure_prepared(labels, templates, multi_label, adapter)
        decoded = self.load(audio, source=source)
        return self.score(
            decoded, prepared, threshold=threshold, min_margin=min_margin, label_thresholds=label_thresholds
        )

    def classify_batch(
        self,
        audios: Iterable[AudioInput],
        labels: LabelsInput | PreparedLabels | None = None,
        *,
        adapter: Adapter | None = None,
        templates: Sequence[str] | None = None,
        multi_label: bool = False,
        threshold: float | None = None,
        min_margin: float | None = None,
        label_thresholds: LabelThresholds = None,
        errors: Literal["raise", "return"] = "raise",
    ) -> list[Classification | FailedInput]:
        """Classify many inputs with one label set; audio is embedded ``batch_size`` at a time.

        ``errors="raise"`` stops at the first bad input; ``errors="return"`` puts a FailedInput in
        its place and carries on. Results are in input order.
        """
        if errors not in ("raise", "return"):
            raise ValueError("errors must be 'raise' or 'return'")
        results: list[Classification | FailedInput] = []
        for item in self.iter_results(
            audios,
            labels,
            adapter=adapter,
            templates=templates,
            multi_label=multi_label,
            threshold=threshold,
            min_margin=min_margin,
            label_thresholds=label_thresholds,
        ):
            if item.error is not None and errors == "raise":
                raise item.error
            results.append(item.result)
        return results

    def iter_results(
        self,
        audios: Iterable[AudioInput],
        labels: LabelsInput | PreparedLabels | None = None,
        *,
        adapter: Adapter | None = None,
        templates: Sequence[str] | None = None,
        multi_label: bool = False,
        threshold: float | None = None,
        min_margin: float | None = None,
        label_thresholds: LabelThresholds = None,
        batch_size: int | None = None,
        decode_workers: int = 0,
        embedder: Embedder | None = None,
    ) -> Iterator[ScoredInput]:
        """The one decode -> features -> embed -> score loop, as a lazy stream in input order.

        Inputs are decoded one batch at a time (with ``decode_workers`` threads decoding ahead when
        above 0), so memory does not grow with the number of inputs. A bad input becomes a
        FailedInput in its place; a clip that fails inside the model fails alone, never its batch.
        ``embedder`` replaces the local model call (the HTTP service passes its shared micro-batcher).
        """
        prepared = self._ensure_prepared(labels, templates, multi_label, adapter)
        check_label_thresholds(prepared, label_thresholds)
        decision = self.decision(threshold=threshold, min_margin=min_margin, label_thresholds=label_thresholds)
        size = batch_size or self.settings.batch_size
        embed = embedder or self.embed_features_isolated
        pending: list[DecodedInput] = []
        for decoded in self._decode_stream(audios, decode_workers, prefetch=2 * size + decode_workers):
            pending.append(decoded)
            if sum(item.features is not None for item in pending) >= size:
                yield from self._score_group(pending, prepared, decision, embed)
                pending = []
        if pending:
            yield from self._score_group(pending, prepared, decision, embed)

    def _score_group(
        self, group: list[DecodedInput], prepared: PreparedLabels, decision: Decision, embed: Embedder
    ) -> Iterator[ScoredInput]:
        ready = [item.features for item in group if item.features is not None]
        started = time.perf_counter()
        outcomes = iter(embed(ready) if ready else [])
        model_s = (time.perf_counter() - started) / max(1, len(ready))
        for item in group:
            outcome = next(outcomes) if item.features is not None else None
            yield self.scored_input(item, outcome, prepared, decision, model_s=model_s)

    def _decode_stream(self, audios: Iterable[AudioInput], workers: int, prefetch: int) -> Iterator[DecodedInput]:
        numbered = enumerate(audios)
        if workers <= 0:
            yield from (self.decode_input(audio, index=index) for index, audio in numbered)
            return
        with ThreadPoolExecutor(workers, thread_name_prefix="soundsift-decode") as pool:
            queue: deque[Future[DecodedInput]] = deque()
            try:
                for index, audio in numbered:
                    queue.append(pool.submit(self.decode_input, audio, index=index))
                    if len(queue) >= prefetch:
                        yield queue.popleft().result()
                while queue:
                    yield queue.popleft().result()
            finally:
                for future in queue:
                    future.cancel()

    def decode_input(self, audio: AudioInput, *, index: int = 0, source: str | None = None) -> DecodedInput:
        """Decode and featurize one input; a SoundsiftError is kept in the result, not raised.
        Thread-safe: the HTTP service and the batch job call it from worker threads."""
        started = time.perf_counter()
        name = source or describe_source(audio)
        try:
            clip = self.load(audio, source=source)
            features = self.featurize(clip)
        except SoundsiftError as error:
            return DecodedInput(index, name, None, 0.0, False, error, time.perf_counter() - started)
        return DecodedInput(
            index, clip.source, features, clip.duration_s, clip.silent, None, time.perf_counter() - started
        )

    def scored_input(
        self,
        item: DecodedInput,
        outcome: np.ndarray | SoundsiftError | None,
        prepared: PreparedLabels,
        decision: Decision,
        *,
        model_s: float = 0.0,
    ) -> ScoredInput:
        """The result for one decoded input, given its embedding (or the error that replaced it)."""
        error = item.error if item.error is not None else outcome if isinstance(outcome, SoundsiftError) else None
        if error is not None:
            return ScoredInput(item.index, item.source, failed_input(item.source, error), error, item.decode_s, 0.0)
        assert isinstance(outcome, np.ndarray)
        result = score_embedding(
            outcome,
            prepared,
            decision,
            source=item.source,
            duration_s=item.duration_s,
            silent=item.silent,
            model=self.model_id,
        )
        return ScoredInput(item.index, item.source, result, None, item.decode_s, model_s)

    def decision(
        self,
        *,
        threshold: float | None = None,
        min_margin: float | None = None,
        label_thresholds: LabelThresholds = None,
    ) -> Decision:
        """This classifier's verdict rules, with the request's overrides."""
        return Decision.build(
            logit_scale=self.backend.logit_scale,
            threshold=self.settings.threshold if threshold is None else threshold,
            min_margin=self.settings.min_margin if min_margin is None else min_margin,
            label_threshold=self.settings.label_threshold,
            label_thresholds=label_thresholds,
        )

    def score(
        self,
        decoded: DecodedAudio,
        prepared: PreparedLabels,
        *,
        threshold: float | None = None,
        min_margin: float | None = None,
        label_thresholds: LabelThresholds = None,
    ) -> Classification:
        """Classify already decoded audio."""
        check_label_thresholds(prepared, label_thresholds)
        (embedding,) = self.embed_decoded([decoded])
        decision = self.decision(threshold=threshold, min_margin=min_margin, label_thresholds=label_thresholds)
        return self.score_embedding(decoded, embedding, prepared, decision)

    def score_embedding(
        self, decoded: DecodedAudio, embedding: np.ndarray, prepared: PreparedLabels, decision: Decision
    ) -> Classification:
        """Score one clip's audio embedding (see soundsift.core.scoring)."""
        return score_embedding(
            embedding,
            prepared,
            decision,
            source=decoded.source,
            duration_s=decoded.duration_s,
            silent=decoded.silent,
            model=self.model_id,
        )

    # ---- labels -------------------------------------------------------------------------------

    def prepare_labels(
        self,
        labels: LabelsInput | None = None,
        *,
        templates: Sequence[str] | None = None,
        multi_label: bool = False,
        adapter: Adapter | None = None,
    ) -> PreparedLabels:
        """Parse labels and compute class embeddings once, for reuse over many clips.

        With an ``adapter`` (or the classifier's own) its taught labels come first and ``labels``
        add zero-shot ones (optional)."""
        chosen_adapter = self.checked_adapter(adapter) if adapter is not None else self.adapter
        if chosen_adapter is None:
            if not labels:
                raise LabelError("labels are needed (or an adapter with taught labels)")
            return self.zero_shot_labels(labels, templates=templates, multi_label=multi_label)
        extras = (
            self.zero_shot_labels(labels, templates=templates, multi_label=multi_label, min_labels=0)
            if labels
            else None
        )
        return chosen_adapter.prepared_labels(extras, multi_label=multi_label)

    def zero_shot_labels(
        self,
        labels: LabelsInput | None,
        *,
        templates: Sequence[str] | None = None,
        multi_label: bool = False,
        min_labels: int | None = None,
    ) -> PreparedLabels:
        """Labels as the text encoder sees them: parsed, translated, prompted and embedded."""
        chosen = self._templates(templates)
        least = (1 if multi_label else 2) if min_labels is None else min_labels
        classes = parse_labels(labels or [], limits=self.label_limits, min_labels=least)
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
        groups = prompts + exclusion_prompts
        embeddings = (
            self._mean_embeddings(groups) if groups else np.zeros((0, self.fingerprint().shape[1]), dtype=np.float32)
        )
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

    @property
    def label_limits(self) -> LabelLimits:
        return LabelLimits(
            max_labels=self.settings.max_labels,
            max_label_chars=self.settings.max_label_chars,
            max_synonyms=self.settings.max_synonyms,
            max_total_chars=self.settings.max_label_text_chars,
        )

    def _templates(self, templates: Sequence[str] | None) -> tuple[str, ...]:
        if not templates:
            return tuple(self.settings.templates)
        if len(templates) > self.settings.max_templates:
            raise LabelError(f"{len(templates)} templates given; the limit is {self.settings.max_templates}")
        return tuple(validate_templates(list(templates), max_chars=self.settings.max_template_chars))

    def _english_phrases(self, phrases: Sequence[str], warnings: list[str]) -> tuple[list[str], list[str] | None]:
        """Phrases for the text encoder, and the English used when translation changed anything."""
        if not self.settings.translate:
            return list(phrases), None
        english: dict[str, None] = {}  # ordered, de-duplicated in linear time
        changed = False
        for phrase in phrases:
            translation = self.glossary.translate(phrase)
            english.update(dict.fromkeys(translation.phrases))
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
        return list(english), (list(english) if changed else None)

    @cached_property
    def glossary(self) -> Glossary:
        translator = None
        if self.settings.translator:
            from soundsift.i18n.machine import MachineTranslator

            translator = MachineTranslator(self.settings.translator)
        return Glossary.load([Path(path) for path in self.settings.glossary], translator=translator)

    # ---- audio and embeddings -----------------------------------------------------------------

    def load(self, audio: AudioInput, *, source: str | None = None) -> DecodedAudio:
        """Decode and resample one input under this classifier's limits."""
        return load_audio(
            audio, self.sample_rate, limits=self.audio_limits, silence_db=self.settings.silence_db, source=source
        )

    def featurize(self, clip: DecodedAudio) -> ClipFeatures:
        features, is_longer = self.featurizer.clip_features(clip.samples)
        return ClipFeatures(features.astype(np.float32, copy=False), is_longer)

    def embed_features(self, items: Sequence[ClipFeatures]) -> np.ndarray:
        """(N, D) unit audio embeddings of featurized clips, ``batch_size`` per model call."""
        size = self.settings.batch_size
        batches = [
            self.backend.embed_audio(
                np.stack([item.features for item in items[start : start + size]]),
                np.array([[item.is_longer] for item in items[start : start + size]], dtype=bool),
            )
            for start in range(0, len(items), size)
        ]
        return np.concatenate(batches) if batches else np.zeros((0, 0), dtype=np.float32)

    def embed_features_isolated(self, items: Sequence[ClipFeatures]) -> list[np.ndarray | SoundsiftError]:
        """Like `embed_features`, but when a batch fails each clip is retried alone, so one bad clip
        gets an error and its neighbours still get their embeddings."""
        try:
            return list(self.embed_features(items))
        except Exception:
            if len(items) == 1:
                logger.exception("the model failed on one clip")
                return [ProcessingError("the model failed on this clip; see the log")]
        return [outcome for item in items for outcome in self.embed_features_isolated([item])]

    def embed_clips(self, audios: Sequence[AudioInput]) -> list[np.ndarray | SoundsiftError]:
        """One (D,) unit embedding per input, or the error that input got: a bad clip fails alone.
        Inputs are decoded a batch at a time, so memory does not grow with their number."""
        embedded: list[np.ndarray | SoundsiftError] = []
        for group in batched(enumerate(audios), self.settings.batch_size):
            decoded = [self.decode_input(audio, index=index) for index, audio in group]
            ready = [item.features for item in decoded if item.features is not None]
            outcomes = iter(self.embed_features_isolated(ready) if ready else [])
            embedded.extend(next(outcomes) if item.error is None else item.error for item in decoded)
        return embedded

    def embed_decoded(self, clips: Sequence[DecodedAudio]) -> np.ndarray:
        """(N, D) unit audio embeddings of decoded clips."""
        return self.embed_features([self.featurize(clip) for clip in clips])

    def embed_audio(self, audios: AudioInput | Sequence[AudioInput]) -> np.ndarray:
        """(N, D) L2-normalised audio embeddings; one input gives a (1, D) array."""
        items = [cast(AudioInput, audios)] if _is_single_audio(audios) else list(cast(Sequence[AudioInput], audios))
        return self.embed_decoded([self.load(audio) for audio in items])

    def embed_text(self, texts: str | Sequence[str]) -> np.ndarray:
        """(N, D) L2-normalised text embeddings of the texts exactly as given (no template)."""
        items = [texts] if isinstance(texts, str) else list(texts)
        return self._cached_text_embeddings(items)

    def _ensure_prepared(
        self,
        labels: LabelsInput | PreparedLabels | None,
        templates: Sequence[str] | None,
        multi_label: bool,
        adapter: Adapter | None,
    ) -> PreparedLabels:
        if isinstance(labels, PreparedLabels):
            return labels
        return self.prepare_labels(labels, templates=templates, multi_label=multi_label, adapter=adapter)

    def _mean_embeddings(self, prompts: list[list[str]]) -> np.ndarray:
        """(G, D): per group, the normalised mean of its prompts' embeddings (one text-encoder call)."""
        flat = self._cached_text_embeddings([p for group in prompts for p in group])
        bounds = np.cumsum([0] + [len(group) for group in prompts])
        means = np.stack([flat[start:end].mean(axis=0) for start, end in pairwise(bounds)])
        return means / np.linalg.norm(means, axis=1, keepdims=True)

    def _cached_text_embeddings(self, texts: list[str]) -> np.ndarray:
        """Embeddings from an LRU cache of ``text_cache_size`` entries (each text is length-bounded
        by the label and template limits, so the cache's memory is bounded too)."""
        with self._cache_lock:
            known = {text: self._text_cache[text] for text in texts if text in self._text_cache}
            for text in known:
                self._text_cache.move_to_end(text)
        missing = [text for text in dict.fromkeys(texts) if text not in known]
        if missing:
            known.update(zip(missing, self.backend.embed_text(missing)))
            with self._cache_lock:
                for text in missing:
                    self._text_cache[text] = known[text]
                while len(self._text_cache) > self.settings.text_cache_size:
                    self._text_cache.popitem(last=False)
        return np.stack([known[text] for text in texts])


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


def _is_single_audio(audios: object) -> bool:
    return (
        isinstance(audios, (str, bytes, bytearray, np.ndarray))
        or is_array_input(audios)
        or hasattr(audios, "read")
        or hasattr(audios, "__fspath__")
    )
