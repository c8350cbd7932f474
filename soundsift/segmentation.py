"""Long recordings: slide a window over a decoded stream, score every window, find the events.

Memory stays bounded: the stream is decoded block by block and only the current window, one batch
of windows and the (windows x labels) score matrix are held.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np

from soundsift.audio import AudioInput, DecodedAudio, is_silent, stream_audio
from soundsift.classifier import Classifier, batched
from soundsift.errors import ConfigurationError, LabelError
from soundsift.events import EventRules, detect_events
from soundsift.labels import LabelsInput, label_names
from soundsift.results import Detection, SoundEvent, WindowScores

DEFAULT_WINDOW_S = 5.0
Progress = Callable[[float, float | None], None]
"""Called with (seconds of audio scored so far, total seconds when known)."""


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


def detect(
    classifier: Classifier,
    audio: AudioInput,
    labels: LabelsInput,
    *,
    window_s: float = DEFAULT_WINDOW_S,
    hop_s: float | None = None,
    threshold: float = 0.5,
    off_threshold: float | None = None,
    label_thresholds: Mapping[str, float] | None = None,
    smoothing_windows: int = 1,
    min_duration_s: float = 0.0,
    merge_gap_s: float = 0.0,
    background: Sequence[str] | str | None = None,
    templates: Sequence[str] | None = None,
    source: str | None = None,
    progress: Progress | None = None,
) -> Detection:
    hop_s = window_s / 2 if hop_s is None else hop_s
    _check_geometry(window_s, hop_s)
    background_labels = label_names(background) if background else []
    label_list = _with_background(labels, background_labels)
    prepared = classifier.prepare_labels(label_list, templates=templates)
    names = prepared.names
    unknown = set(label_thresholds or {}) - set(names)
    if unknown:
        raise LabelError(f"thresholds given for unknown labels: {', '.join(sorted(unknown))}")
    rate = classifier.sample_rate
    stream = stream_audio(audio, rate, max_duration_s=classifier.settings.max_detect_duration_s, source=source)
    windows = sliding_windows(stream.blocks, round(window_s * rate), round(hop_s * rate))
    starts, ends, rows = [], [], []
    for batch in batched(windows, classifier.settings.batch_size):
        clips = [
            DecodedAudio(samples, rate, stream.source, is_silent(samples, classifier.settings.silence_db))
            for _, samples in batch
        ]
        for (start, samples), clip, embedding in zip(batch, clips, classifier.embed_decoded(clips)):
            result = classifier.result_from_embedding(clip, embedding, prepared)
            by_label = {score.label: score.score for score in result.scores}
            rows.append([by_label[name] for name in names])
            starts.append(start / rate)
            ends.append((start + len(samples)) / rate)
        if progress is not None:
            progress(ends[-1], stream.declared_duration_s)
    duration = ends[-1] if ends else 0.0
    scores = np.array(rows, dtype=float).reshape(len(rows), len(names))
    rules = EventRules(
        threshold=threshold,
        off_threshold=off_threshold,
        label_thresholds=dict(label_thresholds or {}),
        smoothing_windows=smoothing_windows,
        min_duration_s=min_duration_s,
        merge_gap_s=merge_gap_s,
        background=frozenset(background_labels),
    )
    centres = [(start + end) / 2 for start, end in zip(starts, ends)]
    events = detect_events(centres, scores, names, hop_s, rules, duration_s=duration)
    return Detection(
        source=stream.source,
        duration_s=round(duration, 3),
        window_s=window_s,
        hop_s=hop_s,
        labels=names,
        background=background_labels,
        events=[
            SoundEvent(
                label=e.label, start_s=e.start_s, end_s=e.end_s, peak_score=e.peak_score, mean_score=e.mean_score
            )
            for e in events
        ],
        windows=[
            WindowScores(start_s=round(s, 3), end_s=round(e, 3), scores=dict(zip(names, map(float, row))))
            for s, e, row in zip(starts, ends, scores)
        ],
        model=classifier.model_id,
        translations=prepared.translations,
        warnings=prepared.warnings,
    )


def _check_geometry(window_s: float, hop_s: float) -> None:
    if not 0.1 <= window_s <= 60:
        raise ConfigurationError(f"window_s must be between 0.1 and 60 seconds, got {window_s:g}")
    if not 0 < hop_s <= window_s:
        raise ConfigurationError(f"hop_s must be above 0 and at most window_s ({window_s:g}), got {hop_s:g}")


def _with_background(labels: LabelsInput, background: list[str]) -> LabelsInput:
    """Background labels join the label set (they compete in the scores) unless already there."""
    if not background:
        return labels
    if isinstance(labels, str):
        present = set(label_names(labels))
        return ", ".join([labels, *(name for name in background if name not in present)])
    if isinstance(labels, Mapping):
        return {**labels, **{name: name for name in background if name not in labels}}
    present = {item if isinstance(item, str) else item[0] for item in labels}
    return [*labels, *(name for name in background if name not in present)]
