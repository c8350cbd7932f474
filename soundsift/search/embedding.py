"""Files to window vectors: the index's side of the batch pipeline.

Each file is hashed, decoded as a stream and cut into overlapping windows (the sliding windows of
`soundsift detect`), each window featurized on a worker thread; the main thread embeds windows of
all files together, ``batch_size`` per model call. Memory is bounded: workers block on a queue of
about two batches of features (1 MB each), whatever the length of the files, and a file's vectors
(2 KB a window) are kept only until it is complete.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from soundsift.core.audio import AudioInput, AudioLimits, DecodedAudio, is_silent, stream_audio
from soundsift.core.classifier import Classifier, ClipFeatures, Embedder
from soundsift.detection.windows import sliding_windows
from soundsift.errors import AudioTooShortError, ProcessingError, SoundsiftError

logger = logging.getLogger("soundsift.search")

DEFAULT_WINDOW_S = 5.0
DEFAULT_HOP_S = 2.5
_HASH_CHUNK = 1 << 20
# The fingerprint probe: a fixed 3 s signal (a rising chirp over seeded noise). Its embedding is
# stored with the index; a model whose embedding of it differs is another model.
_PROBE_SECONDS = 3.0
_PROBE_SEED = 18
FINGERPRINT_MIN_COSINE = 0.98


@dataclass(frozen=True)
class FileTask:
    """One file to embed; ``known_sha256`` is the stored hash when only its stat changed."""

    file_id: int
    path: str
    known_sha256: str | None = None


@dataclass
class FileVectors:
    """A file's outcome: its windows' times and vectors, or the error that stopped it, or
    ``unchanged`` when its content hash equals ``known_sha256`` (nothing was decoded)."""

    task: FileTask
    sha256: str | None = None
    starts: list[float] = field(default_factory=list)
    ends: list[float] = field(default_factory=list)
    vectors: list[np.ndarray] = field(default_factory=list)
    duration_s: float = 0.0
    error: SoundsiftError | None = None
    unchanged: bool = False


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class WindowLayout:
    window_s: float = DEFAULT_WINDOW_S
    hop_s: float = DEFAULT_HOP_S


def iter_windows(
    classifier: Classifier, audio: AudioInput, layout: WindowLayout, *, source: str | None = None
) -> Iterator[tuple[float, float, ClipFeatures]]:
    """(start_s, end_s, features) of every window of a recording, decoded as a stream. Local files
    are trusted: no duration limit (as `soundsift detect`), the channel limit still applies."""
    rate = classifier.sample_rate
    limits = AudioLimits(max_channels=classifier.settings.max_channels)
    stream = stream_audio(audio, rate, limits=limits, source=source, check_truncation=True)
    silence_db = classifier.settings.silence_db
    for start, samples in sliding_windows(stream.blocks, round(layout.window_s * rate), round(layout.hop_s * rate)):
        clip = DecodedAudio(samples, rate, stream.source, is_silent(samples, silence_db))
        yield start / rate, (start + len(samples)) / rate, classifier.featurize(clip)


def embed_windows(
    classifier: Classifier, windows: Iterable[tuple[float, float, ClipFeatures]], embed: Embedder | None = None
) -> tuple[list[float], list[float], np.ndarray]:
    """All windows of one input embedded (``batch_size`` per model call): starts, ends, (N, D)."""
    embed = embed or classifier.embed_features_isolated
    starts, ends, vectors = [], [], []
    batch: list[tuple[float, float, ClipFeatures]] = []
    for window in [*windows, None]:
        if window is not None:
            batch.append(window)
        if batch and (window is None or len(batch) >= classifier.settings.batch_size):
            for (start, end, _), outcome in zip(batch, embed([item[2] for item in batch]), strict=True):
                if isinstance(outcome, SoundsiftError):
                    raise outcome
                starts.append(start)
                ends.append(end)
                vectors.append(outcome)
            batch = []
    if not vectors:
        raise AudioTooShortError("no audio to search in")
    return starts, ends, np.stack(vectors).astype(np.float32)


def fingerprint(classifier: Classifier, embed: Embedder | None = None) -> list[float]:
    """The model's embedding of the fixed probe signal (rounded; stored in the manifest)."""
    rate = classifier.sample_rate
    t = np.arange(int(_PROBE_SECONDS * rate)) / rate
    chirp = np.sin(2 * np.pi * (200 * t + 600 * t**2))
    noise = np.random.default_rng(_PROBE_SEED).normal(0, 0.05, len(t))
    samples = (0.3 * chirp + noise).astype(np.float32)
    features = classifier.featurize(DecodedAudio(samples, rate, "<probe>", False))
    (outcome,) = (embed or classifier.embed_features_isolated)([features])
    if isinstance(outcome, SoundsiftError):
        raise outcome
    return [round(float(x), 6) for x in outcome]


def same_model(stored: Sequence[float], current: Sequence[float]) -> bool:
    a, b = np.asarray(stored, dtype=np.float64), np.asarray(current, dtype=np.float64)
    if a.shape != b.shape:
        return False
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12)) >= FINGERPRINT_MIN_COSINE


# ---- the parallel pipeline ---------------------------------------------------------------------


@dataclass(frozen=True)
class _Window:
    task: FileTask
    start_s: float
    end_s: float
    features: ClipFeatures


@dataclass(frozen=True)
class _Finished:
    task: FileTask
    sha256: str | None
    duration_s: float = 0.0
    error: SoundsiftError | None = None
    unchanged: bool = False
    windows: int = 0


class FileEmbedder:
    """Embeds many files: ``workers`` threads hash, decode and featurize files; the calling thread
    embeds their windows together in model batches and yields each file as soon as it is complete.

    ``embed`` replaces the local model call (the server passes one that goes through its shared
    micro-batcher and admission). Set ``stop`` to end early: files not complete are not yielded.
    """

    def __init__(
        self,
        classifier: Classifier,
        layout: WindowLayout,
        *,
        workers: int = 2,
        embed: Embedder | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        self.classifier, self.layout = classifier, layout
        self.workers = max(1, workers)
        self.embed = embed or classifier.embed_features_isolated
        self.batch_size = classifier.settings.batch_size
        self.stop = stop or threading.Event()

    def run(self, tasks: Sequence[FileTask]) -> Iterator[FileVectors]:
        items: queue.Queue[_Window | _Finished] = queue.Queue(maxsize=2 * self.batch_size + self.workers)
        abandoned = threading.Event()  # the consumer left: workers drop what they hold
        with ThreadPoolExecutor(self.workers, thread_name_prefix="soundsift-index") as pool:
            for task in tasks:
                pool.submit(self._produce, task, items, abandoned)
            try:
                yield from self._consume(items, len(tasks))
            finally:
                abandoned.set()
                pool.shutdown(wait=True, cancel_futures=True)

    def _produce(self, task: FileTask, items: queue.Queue[_Window | _Finished], abandoned: threading.Event) -> None:
        def put(item: _Window | _Finished) -> bool:
            while not abandoned.is_set():
                try:
                    items.put(item, timeout=0.2)
                    return True
                except queue.Full:
                    continue
            return False

        if abandoned.is_set() or self.stop.is_set():
            put(_Finished(task, None, error=_stopped()))
            return
        sha256: str | None = None
        try:
            sha256 = file_sha256(task.path)
            if task.known_sha256 is not None and sha256 == task.known_sha256:
                put(_Finished(task, sha256, unchanged=True))
                return
            count, end = 0, 0.0
            for start, end, features in iter_windows(self.classifier, task.path, self.layout, source=task.path):
                if self.stop.is_set() or not put(_Window(task, start, end, features)):
                    put(_Finished(task, sha256, error=_stopped()))
                    return
                count += 1
            if count == 0:
                raise AudioTooShortError("no audio samples", source=task.path)
            put(_Finished(task, sha256, duration_s=end, windows=count))
        except SoundsiftError as error:
            put(_Finished(task, sha256, error=error))
        except OSError as error:
            put(_Finished(task, sha256, error=ProcessingError(f"cannot read the file ({error})", source=task.path)))
        except Exception:  # a bug must not end the run: the file is recorded as failed, the log has why
            logger.exception("indexing %s failed", task.path)
            put(_Finished(task, sha256, error=ProcessingError("indexing failed; see the log", source=task.path)))

    def _consume(self, items: queue.Queue[_Window | _Finished], total: int) -> Iterator[FileVectors]:
        open_files: dict[int, FileVectors] = {}
        expected: dict[int, int] = {}
        pending: list[_Window] = []
        finished = 0
        while finished < total:
            item = items.get()
            if isinstance(item, _Window):
                open_files.setdefault(item.task.file_id, FileVectors(item.task))
                pending.append(item)
                if len(pending) >= self.batch_size:
                    self._embed(pending, open_files)
                    pending = []
                    yield from self._complete(open_files, expected)
                continue
            finished += 1
            outcome = open_files.setdefault(item.task.file_id, FileVectors(item.task))
            outcome.sha256, outcome.duration_s = item.sha256, item.duration_s
            outcome.error, outcome.unchanged = outcome.error or item.error, item.unchanged
            expected[item.task.file_id] = item.windows if item.error is None and not item.unchanged else 0
            if outcome.error is not None or outcome.unchanged:
                pending = [window for window in pending if window.task.file_id != item.task.file_id]
            yield from self._complete(open_files, expected)
        if pending:
            self._embed(pending, open_files)
        yield from self._complete(open_files, expected)

    def _embed(self, windows: list[_Window], open_files: dict[int, FileVectors]) -> None:
        outcomes = self.embed([window.features for window in windows])
        for window, outcome in zip(windows, outcomes, strict=True):
            target = open_files.get(window.task.file_id)
            if target is None or target.error is not None:
                continue
            if isinstance(outcome, SoundsiftError):
                target.error = outcome  # one window the model cannot embed fails its file, visibly
                continue
            target.starts.append(window.start_s)
            target.ends.append(window.end_s)
            target.vectors.append(outcome)

    @staticmethod
    def _complete(open_files: dict[int, FileVectors], expected: dict[int, int]) -> Iterator[FileVectors]:
        done = [
            f for f, count in expected.items() if open_files[f].error is not None or len(open_files[f].vectors) >= count
        ]
        for file_id in done:
            del expected[file_id]
            outcome = open_files.pop(file_id)
            if outcome.error is not None and outcome.error.code == "stopped":
                continue
            yield outcome


class _StoppedError(SoundsiftError):
    code = "stopped"


def _stopped() -> SoundsiftError:
    return _StoppedError("the run was stopped")
