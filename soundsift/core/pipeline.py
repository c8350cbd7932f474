"""The one path from audio to scores: decode -> features -> embed -> score.

Every feature goes through it: classification (one clip, a batch, a stream), detection and search
(the windows of a recording), teaching (its examples), the monitor and the server. Each step is a
method of `Pipeline`; the model is reached through an `Embedder`:

- `LocalEmbedder` calls a backend directly, ``batch_size`` inputs per call, and isolates failures:
  when a call fails, each of its inputs is retried alone, so one bad input gets an error and the
  others still get their embeddings. It is the only code that calls a backend's ``embed_audio`` or
  ``embed_text``.
- `soundsift.core.engine.ModelEngine` batches the inputs of many callers (threads or coroutines)
  over one or more replicas; the server and the monitor use it.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol, TypeVar

import numpy as np

from soundsift.backends import Backend
from soundsift.core.audio import (
    AudioInput,
    AudioLimits,
    AudioStream,
    DecodedAudio,
    describe_source,
    level_dbfs,
    load_audio,
)
from soundsift.core.features import MelFeaturizer, int16_roundtrip
from soundsift.core.results import Classification, FailedInput
from soundsift.core.scoring import Decision, PreparedLabels, ScoringOptions, failed_input, score_embedding
from soundsift.core.settings import ModelSettings
from soundsift.errors import ProcessingError, SoundsiftError

logger = logging.getLogger("soundsift")

Outcome = np.ndarray | SoundsiftError
"""One input's (D,) unit embedding, or the error that replaced it."""
Item = TypeVar("Item")
Decoded = TypeVar("Decoded")


@dataclass(frozen=True)
class ClipFeatures:
    """One clip's model input: (C, T, F) log-mel features and whether it is longer than the window.

    About 1 MB whatever the clip's length, so queues hold features, never long decoded audio."""

    features: np.ndarray
    is_longer: bool


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


@dataclass(frozen=True)
class ScoredInput:
    """One input's outcome, in input order, with what it cost."""

    index: int
    source: str
    result: Classification | FailedInput
    error: SoundsiftError | None
    decode_s: float
    model_s: float


@dataclass(frozen=True)
class Window:
    """One window of a recording, ready for the model, or ``gated``: quieter than the silence gate,
    so it was neither featurized nor is it to be sent to the model (``features`` is None)."""

    start_s: float
    end_s: float
    silent: bool
    features: ClipFeatures | None
    level_dbfs: float

    @property
    def gated(self) -> bool:
        return self.features is None


class Embedder(Protocol):
    """The model as the pipeline sees it: one outcome per input, in order; never raises for one input."""

    def embed_audio(self, items: Sequence[ClipFeatures]) -> list[Outcome]: ...

    def embed_text(self, texts: Sequence[str]) -> list[Outcome]: ...


class LocalEmbedder:
    """A backend's own embedding calls, ``batch_size`` inputs per call, failures isolated per input."""

    def __init__(self, backend: Backend, batch_size: int) -> None:
        self.backend, self.batch_size = backend, batch_size

    def embed_audio(self, items: Sequence[ClipFeatures]) -> list[Outcome]:
        return [
            outcome
            for chunk in batched(items, self.batch_size)
            for outcome in _isolated(self._audio_call, chunk, "clip")
        ]

    def embed_text(self, texts: Sequence[str]) -> list[Outcome]:
        return [
            outcome
            for chunk in batched(texts, self.batch_size)
            for outcome in _isolated(self._text_call, chunk, "text")
        ]

    def _audio_call(self, items: list[ClipFeatures]) -> np.ndarray:
        features = np.stack([item.features for item in items])
        is_longer = np.array([[item.is_longer] for item in items], dtype=bool)
        return self.backend.embed_audio(features, is_longer)

    def _text_call(self, texts: list[str]) -> np.ndarray:
        return self.backend.embed_text(texts)


def _isolated(call: Callable[[list[Item]], np.ndarray], items: list[Item], what: str) -> list[Outcome]:
    """``call`` on all items; when it fails, on each item alone, so only the culprit gets an error."""
    try:
        return list(call(items))
    except Exception:
        if len(items) == 1:
            logger.exception("the model failed on one %s", what)
            return [ProcessingError(f"the model failed on this {what}; see the log")]
    return [outcome for item in items for outcome in _isolated(call, [item], what)]


def embeddings_or_raise(outcomes: Sequence[Outcome]) -> np.ndarray:
    """(N, D) from outcomes that are all embeddings; the first error is raised."""
    vectors = []
    for outcome in outcomes:
        if isinstance(outcome, SoundsiftError):
            raise outcome
        vectors.append(outcome)
    return np.stack(vectors).astype(np.float32, copy=False) if vectors else np.zeros((0, 0), np.float32)


def ready_features(decoded: Sequence[DecodedInput]) -> list[ClipFeatures]:
    """The features of the inputs that decoded, to embed in one go."""
    return [item.features for item in decoded if item.features is not None]


def merge_outcomes(decoded: Sequence[DecodedInput], embedded: Sequence[Outcome]) -> list[Outcome]:
    """Per input: its decoding error, or its embedding's outcome (``embedded`` holds one per ready input)."""
    outcomes = iter(embedded)
    return [next(outcomes) if item.error is None else item.error for item in decoded]


class Pipeline:
    """The steps from audio to scores for one model, with its settings' limits and rules."""

    def __init__(self, settings: ModelSettings, backend: Backend, embedder: Embedder) -> None:
        self.settings, self.embedder = settings, embedder
        self.model_id = backend.model_id
        self.sample_rate = backend.mel_settings.sampling_rate
        self.logit_scale = backend.logit_scale
        self.featurizer = MelFeaturizer(backend.mel_settings)
        self.audio_limits = AudioLimits(
            max_duration_s=settings.max_duration_s,
            min_duration_s=settings.min_duration_s,
            max_decoded_mb=settings.max_decoded_mb,
            max_channels=settings.max_channels,
        )

    # ---- decode and featurize ----------------------------------------------------------------

    def load(self, audio: AudioInput, *, source: str | None = None) -> DecodedAudio:
        """Decode and resample one input under the settings' limits."""
        return load_audio(
            audio, self.sample_rate, limits=self.audio_limits, silence_db=self.settings.silence_db, source=source
        )

    def featurize(self, clip: DecodedAudio) -> ClipFeatures:
        return self.features_of(clip.samples)

    def features_of(self, samples: np.ndarray) -> ClipFeatures:
        """Model input for mono samples at the model's rate (through 16-bit integers first, as the
        reference does, unless the ``reference_int16`` setting is off)."""
        if self.settings.reference_int16:
            samples = int16_roundtrip(samples)
        features, is_longer = self.featurizer.clip_features(samples)
        return ClipFeatures(features.astype(np.float32, copy=False), is_longer)

    def decode_input(self, audio: AudioInput, *, index: int = 0, source: str | None = None) -> DecodedInput:
        """Decode and featurize one input; a SoundsiftError is kept in the result, not raised.
        Thread-safe: the server and the batch job call it from worker threads."""
        (decoded,) = self.decode_input_for([self], audio, index=index, source=source)
        return decoded

    def decode_input_for(
        self, pipelines: Sequence[Pipeline], audio: AudioInput, *, index: int = 0, source: str | None = None
    ) -> list[DecodedInput]:
        """`decode_input` for several models at once (an ensemble): the input is decoded once, under
        this pipeline's limits, and featurized by each of ``pipelines`` (one DecodedInput each, in
        order; all carry the same error when decoding fails)."""
        started = time.perf_counter()
        name = source or describe_source(audio)
        try:
            clip = self.load(audio, source=source)
            features = [pipeline.featurize(clip) for pipeline in pipelines]
        except SoundsiftError as error:
            failed = DecodedInput(index, name, None, 0.0, False, error, time.perf_counter() - started)
            return [failed for _ in pipelines]
        seconds = time.perf_counter() - started
        return [
            DecodedInput(index, clip.source, item, clip.duration_s, clip.silent, None, seconds) for item in features
        ]

    def windows(
        self, stream: AudioStream, window_s: float, hop_s: float, *, min_dbfs: float | None = None
    ) -> Iterator[Window]:
        """The overlapping windows of a decoded stream (a last, shorter one covers any tail),
        featurized; with ``min_dbfs`` (the silence gate) a window whose RMS level is below it comes
        gated instead, unfeaturized, for the caller to count as quiet without running the model."""
        rate, silence_db = self.sample_rate, self.settings.silence_db
        for start, samples in sliding_windows(stream.blocks, round(window_s * rate), round(hop_s * rate)):
            level = level_dbfs(samples)
            gated = min_dbfs is not None and level < min_dbfs
            features = None if gated else self.features_of(samples)
            yield Window(start / rate, (start + len(samples)) / rate, level <= silence_db, features, level)

    # ---- embed -------------------------------------------------------------------------------

    def embed_inputs(self, decoded: Sequence[DecodedInput]) -> list[Outcome]:
        """One outcome per decoded input: its decoding error, or its embedding's outcome."""
        ready = ready_features(decoded)
        return merge_outcomes(decoded, self.embedder.embed_audio(ready) if ready else [])

    def embed_all(self, audios: Iterable[AudioInput], *, decode_workers: int = 0) -> list[Outcome]:
        """One outcome per input, decoded ``batch_size`` at a time: a bad input fails alone."""
        return [outcome for _, outcomes, _ in self._embedded_groups(audios, decode_workers) for outcome in outcomes]

    def _embedded_groups(
        self, audios: Iterable[AudioInput], decode_workers: int, batch_size: int | None = None
    ) -> Iterator[tuple[list[DecodedInput], list[Outcome], float]]:
        """Groups of decoded inputs with ``batch_size`` ready ones, their outcomes and the model
        seconds per ready input. Memory does not grow with the number of inputs."""
        size = batch_size or self.settings.batch_size
        group: list[DecodedInput] = []
        for decoded in self._decode_stream(audios, decode_workers, prefetch=2 * size + decode_workers):
            group.append(decoded)
            if sum(item.features is not None for item in group) >= size:
                yield self._embedded_group(group)
                group = []
        if group:
            yield self._embedded_group(group)

    def _embedded_group(self, group: list[DecodedInput]) -> tuple[list[DecodedInput], list[Outcome], float]:
        started = time.perf_counter()
        outcomes = self.embed_inputs(group)
        ready = sum(item.features is not None for item in group)
        return group, outcomes, (time.perf_counter() - started) / max(1, ready)

    def _decode_stream(self, audios: Iterable[AudioInput], workers: int, prefetch: int) -> Iterator[DecodedInput]:
        return decoded_ahead(audios, lambda audio, index: self.decode_input(audio, index=index), workers, prefetch)

    # ---- score -------------------------------------------------------------------------------

    def decision(self, options: ScoringOptions | None = None) -> Decision:
        """The settings' verdict rules, with a request's options in their place where given."""
        chosen = options or ScoringOptions()
        return Decision.build(
            logit_scale=self.logit_scale,
            threshold=self.settings.threshold if chosen.threshold is None else chosen.threshold,
            min_margin=self.settings.min_margin if chosen.min_margin is None else chosen.min_margin,
            label_threshold=self.settings.label_threshold,
            label_thresholds=chosen.label_thresholds,
        )

    def score(
        self,
        embedding: np.ndarray,
        prepared: PreparedLabels,
        decision: Decision,
        *,
        source: str,
        duration_s: float,
        silent: bool,
    ) -> Classification:
        """Score one audio embedding (see soundsift.core.scoring)."""
        return score_embedding(
            embedding, prepared, decision, source=source, duration_s=duration_s, silent=silent, model=self.model_id
        )

    def scored(
        self,
        item: DecodedInput,
        outcome: Outcome,
        prepared: PreparedLabels,
        decision: Decision,
        *,
        model_s: float = 0.0,
    ) -> ScoredInput:
        """The result for one decoded input, given its embedding (or the error that replaced it)."""
        if isinstance(outcome, SoundsiftError):
            return ScoredInput(item.index, item.source, failed_input(item.source, outcome), outcome, item.decode_s, 0.0)
        result = self.score(
            outcome, prepared, decision, source=item.source, duration_s=item.duration_s, silent=item.silent
        )
        return ScoredInput(item.index, item.source, result, None, item.decode_s, model_s)

    def run(
        self,
        audios: Iterable[AudioInput],
        prepared: PreparedLabels,
        decision: Decision,
        *,
        batch_size: int | None = None,
        decode_workers: int = 0,
    ) -> Iterator[ScoredInput]:
        """The whole path as a lazy stream in input order: decode (with ``decode_workers`` threads
        decoding ahead when above 0), embed ``batch_size`` at a time, score. A bad input becomes an
        error in its place; an input that fails inside the model fails alone, never its batch."""
        for group, outcomes, model_s in self._embedded_groups(audios, decode_workers, batch_size):
            for item, outcome in zip(group, outcomes, strict=True):
                yield self.scored(item, outcome, prepared, decision, model_s=model_s)


def decoded_ahead(
    audios: Iterable[AudioInput], decode: Callable[[AudioInput, int], Decoded], workers: int, prefetch: int
) -> Iterator[Decoded]:
    """``decode(audio, index)`` of each input, in input order; with ``workers`` above 0, that many
    threads decode up to ``prefetch`` inputs ahead of the consumer (memory stays bounded)."""
    numbered = enumerate(audios)
    if workers <= 0:
        yield from (decode(audio, index) for index, audio in numbered)
        return
    with ThreadPoolExecutor(workers, thread_name_prefix="soundsift-decode") as pool:
        waiting: deque[Future[Decoded]] = deque()
        try:
            for index, audio in numbered:
                waiting.append(pool.submit(decode, audio, index))
                if len(waiting) >= prefetch:
                    yield waiting.popleft().result()
            while waiting:
                yield waiting.popleft().result()
        finally:
            for future in waiting:
                future.cancel()


def batched(items: Iterable[Item], size: int) -> Iterator[list[Item]]:
    """Lists of up to ``size`` consecutive items (itertools.batched needs Python 3.12)."""
    batch: list[Item] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def sliding_windows(blocks: Iterable[np.ndarray], window: int, hop: int) -> Iterator[tuple[int, np.ndarray]]:
    """(start sample, samples) for windows ``hop`` apart; a last, shorter window covers any tail."""
    buffer = np.zeros(0, dtype=np.float32)
    offset = next_start = covered_until = 0
    for block in blocks:
        buffer = np.concatenate([buffer, block])
        while offset + len(buffer) >= next_start + window:
            local = next_start - offset
            yield next_start, buffer[local : local + window].copy()
            covered_until = next_start + window
            next_start += hop
            drop = min(next_start - offset, len(buffer))
            buffer, offset = buffer[drop:], offset + drop
    total = offset + len(buffer)
    if total > covered_until and next_start < total:
        yield next_start, buffer[next_start - offset :].copy()
