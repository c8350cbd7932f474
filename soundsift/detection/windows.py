"""Long recordings: slide a window over a decoded stream, score every window, find the events.

Memory stays bounded: the stream is decoded block by block and only the current window, one batch
of windows and the (windows x labels) score matrix are held. Work is bounded too: a run refuses
recordings that would need more than ``max_windows`` windows, from the header before decoding
and again while streaming.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from soundsift.core.adapter import Adapter
from soundsift.core.audio import AudioInput, AudioLimits, check_min_dbfs, stream_audio
from soundsift.core.classifier import Classifier
from soundsift.core.labels import LabelsInput, label_names
from soundsift.core.pipeline import Window, batched, embeddings_or_raise
from soundsift.core.scoring import check_label_thresholds
from soundsift.detection.events import EventRules, background_labels, detect_events
from soundsift.detection.results import Detection, SoundEvent, WindowScores
from soundsift.errors import AudioTooLongError, ConfigurationError, SoundsiftError

DEFAULT_WINDOW_S = 5.0
MIN_WINDOW_S, MAX_WINDOW_S = 0.1, 60.0
MIN_HOP_S = 0.01
Progress = Callable[[float, float | None], None]
"""Called with (seconds of audio scored so far, total seconds when known)."""


@dataclass(frozen=True)
class DetectOptions:
    """How windows are laid out over a recording and how their scores become events; validated
    when made (ConfigurationError for a window layout that cannot work)."""

    window_s: float = DEFAULT_WINDOW_S
    hop_s: float | None = None
    rules: EventRules = field(default_factory=EventRules)
    templates: tuple[str, ...] | None = None
    min_dbfs: float | None = None
    """The silence gate: windows quieter than this RMS level (dBFS) are not sent to the model and
    score 0 for every label; None scores every window."""

    def __post_init__(self) -> None:
        _check_geometry(self.window_s, self.hop)
        check_min_dbfs(self.min_dbfs)
        if self.templates is not None:
            object.__setattr__(self, "templates", tuple(self.templates) or None)

    @property
    def hop(self) -> float:
        return self.window_s / 2 if self.hop_s is None else self.hop_s


class DetectionRun:
    """One detection over one recording: its windows go through the classifier's pipeline (the local
    model for `detect`, the server's engine when the server's classifier runs it)::

        detection = DetectionRun(classifier, "long.wav", "dog, siren", DetectOptions()).run()
    """

    def __init__(
        self,
        classifier: Classifier,
        audio: AudioInput,
        labels: LabelsInput | None,
        options: DetectOptions,
        *,
        adapter: Adapter | None = None,
        source: str | None = None,
        max_duration_s: float | None = None,
        max_windows: int | None = None,
    ) -> None:
        self.classifier = classifier
        self.window_s = options.window_s
        self.hop_s = options.hop
        self.rules = options.rules
        self.min_dbfs = options.min_dbfs
        self.background = list(options.rules.background)
        self.prepared = classifier.prepare_labels(
            _with_background(labels, self.background), templates=options.templates, adapter=adapter
        )
        check_label_thresholds(self.prepared, dict(self.rules.label_thresholds))
        self.max_windows = max_windows
        limits = AudioLimits(max_duration_s=max_duration_s, max_channels=classifier.settings.max_channels)
        self.stream = stream_audio(audio, classifier.sample_rate, limits=limits, source=source)
        if self.stream.declared_duration_s is not None:
            self._check_window_count(self.expected_windows(self.stream.declared_duration_s))
        self._decision = classifier.pipeline.decision()
        self._starts: list[float] = []
        self._ends: list[float] = []
        self._rows: list[list[float]] = []
        self._gated: list[bool] = []

    @property
    def declared_duration_s(self) -> float | None:
        return self.stream.declared_duration_s

    @property
    def scored_until_s(self) -> float:
        return self._ends[-1] if self._ends else 0.0

    def expected_windows(self, duration_s: float) -> int:
        return max(0, math.ceil((duration_s - self.window_s) / self.hop_s)) + 1

    def run(self, *, progress: Progress | None = None, stop: threading.Event | None = None) -> Detection:
        """Score every window, ``batch_size`` at a time, and find the events. ``progress`` is called
        after each batch; when ``stop`` is set the run ends with StoppedError."""
        pipeline = self.classifier.pipeline
        windows = pipeline.windows(self.stream, self.window_s, self.hop_s, min_dbfs=self.min_dbfs)
        for group in batched(windows, self.classifier.settings.batch_size):
            if stop is not None and stop.is_set():
                raise StoppedError("the detection was stopped", source=self.stream.source)
            self._check_window_count(len(self._rows) + len(group))
            heard = [window.features for window in group if window.features is not None]
            self._add(group, list(embeddings_or_raise(pipeline.embedder.embed_audio(heard))) if heard else [])
            if progress is not None:
                progress(self.scored_until_s, self.declared_duration_s)
        return self.finish()

    def _add(self, windows: Sequence[Window], embeddings: Sequence[np.ndarray]) -> None:
        """Append the windows' score rows: the embedded ones in order, a gated one scores 0 throughout."""
        names, pipeline, source = self.prepared.names, self.classifier.pipeline, self.stream.source
        embedded = iter(embeddings)
        for window in windows:
            if window.gated:
                self._rows.append([0.0] * len(names))
            else:
                result = pipeline.score(
                    next(embedded),
                    self.prepared,
                    self._decision,
                    source=source,
                    duration_s=window.end_s - window.start_s,
                    silent=window.silent,
                )
                by_label = {score.label: score.score for score in result.scores}
                self._rows.append([by_label[name] for name in names])
            self._gated.append(window.gated)
            self._starts.append(window.start_s)
            self._ends.append(window.end_s)

    def finish(self) -> Detection:
        names = self.prepared.names
        duration = self.scored_until_s
        scores = np.array(self._rows, dtype=float).reshape(len(self._rows), len(names))
        centres = [(start + end) / 2 for start, end in zip(self._starts, self._ends)]
        events = detect_events(centres, scores, names, self.hop_s, self.rules, duration_s=duration)
        return Detection(
            source=self.stream.source,
            duration_s=round(duration, 3),
            window_s=self.window_s,
            hop_s=self.hop_s,
            labels=names,
            background=self.background,
            events=[
                SoundEvent(
                    label=e.label, start_s=e.start_s, end_s=e.end_s, peak_score=e.peak_score, mean_score=e.mean_score
                )
                for e in events
            ],
            windows=[
                WindowScores(
                    start_s=round(s, 3), end_s=round(e, 3), scores=dict(zip(names, map(float, row))), gated=gated
                )
                for s, e, row, gated in zip(self._starts, self._ends, scores, self._gated)
            ],
            gated_windows=sum(self._gated),
            model=self.classifier.model_id,
            translations=self.prepared.translations,
            warnings=self.prepared.warnings,
        )

    def _check_window_count(self, windows: int) -> None:
        if self.max_windows is not None and windows > self.max_windows:
            raise AudioTooLongError(
                f"the recording needs more than {self.max_windows} windows of {self.window_s:g} s every "
                f"{self.hop_s:g} s; use a larger hop_s or a shorter recording",
                source=self.stream.source,
            )


def detect(
    classifier: Classifier,
    audio: AudioInput,
    labels: LabelsInput | None = None,
    *,
    adapter: Adapter | None = None,
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
    min_dbfs: float | None = None,
    source: str | None = None,
    max_duration_s: float | None = None,
    max_windows: int | None = None,
    progress: Progress | None = None,
) -> Detection:
    """When each sound happens in a (long) recording: sliding windows, per-window scores, events.

    ``window_s`` (0.1-60 s) long windows start every ``hop_s`` seconds (default half a window). An
    event starts when a label's score, averaged over ``smoothing_windows`` windows, reaches
    ``threshold`` (or its entry in ``label_thresholds``) and ends below ``off_threshold`` (default:
    the same); events of a label closer than ``merge_gap_s`` merge, and shorter than
    ``min_duration_s`` are dropped. ``background`` labels compete in the scores but make no events.
    ``max_duration_s`` and ``max_windows`` bound the work (default: unbounded, the recording is
    streamed); ``progress`` is called with (seconds scored, total seconds or None) after each batch.
    An ``adapter`` (or the classifier's own) adds its taught labels; ``labels`` may then be None.
    ``min_dbfs`` is the silence gate: windows quieter than this RMS level are not sent to the model
    (they score 0, and count in ``gated_windows``); the default None scores every window.
    """
    rules = EventRules(
        threshold=threshold,
        off_threshold=off_threshold,
        label_thresholds=dict(label_thresholds or {}),
        smoothing_windows=smoothing_windows,
        min_duration_s=min_duration_s,
        merge_gap_s=merge_gap_s,
        background=background_labels(background),
    )
    options = DetectOptions(
        window_s=window_s, hop_s=hop_s, rules=rules, templates=tuple(templates or ()) or None, min_dbfs=min_dbfs
    )
    run = DetectionRun(
        classifier,
        audio,
        labels,
        options,
        adapter=adapter,
        source=source,
        max_duration_s=max_duration_s,
        max_windows=max_windows,
    )
    return run.run(progress=progress)


class StoppedError(SoundsiftError):
    """A detection ended early because its caller asked it to (the client went away)."""

    code = "stopped"


def _check_geometry(window_s: float, hop_s: float) -> None:
    if not MIN_WINDOW_S <= window_s <= MAX_WINDOW_S:
        raise ConfigurationError(
            f"window_s must be between {MIN_WINDOW_S:g} and {MAX_WINDOW_S:g} seconds, got {window_s:g}"
        )
    if not MIN_HOP_S <= hop_s <= window_s:
        raise ConfigurationError(f"hop_s must be between {MIN_HOP_S:g} s and window_s ({window_s:g} s), got {hop_s:g}")


def _with_background(labels: LabelsInput | None, background: list[str]) -> LabelsInput | None:
    """Background labels join the label set (they compete in the scores) unless already there."""
    if not background or not labels:
        return labels or background or None
    if isinstance(labels, str):
        present = set(label_names(labels))
        return ", ".join([labels, *(name for name in background if name not in present)])
    if isinstance(labels, Mapping):
        return {**labels, **{name: name for name in background if name not in labels}}
    present = {item if isinstance(item, str) else item[0] for item in labels}
    return [*labels, *(name for name in background if name not in present)]
