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

from soundsift.core.audio import AudioInput, AudioLimits, check_min_dbfs, stream_audio
from soundsift.core.classifier import Classifier
from soundsift.core.pipeline import ClipFeatures, Window, batched, embeddings_or_raise
from soundsift.errors import AudioTooShortError, ProcessingError, SoundsiftError

logger = logging.getLogger("soundsift.search")

DEFAULT_WINDOW_S = 5.0
DEFAULT_HOP_S = 2.5
_HASH_CHUNK = 1 << 20


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
    gated: int = 0
    """Windows the silence gate kept from the model (quieter than ``min_dbfs``): not stored."""


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
    classifier: Classifier,
    audio: AudioInput,
    layout: WindowLayout,
    *,
    source: str | None = None,
    min_dbfs: float | None = None,
) -> Iterator[Window]:
    """Every window of a recording, decoded as a stream and featurized (or gated, with ``min_dbfs``).
    Local files are trusted: no duration limit (as `soundsift detect`), the channel limit still applies."""
    limits = AudioLimits(max_channels=classifier.settings.max_channels)
    stream = stream_audio(audio, classifier.sample_rate, limits=limits, source=source, check_truncation=True)
    return classifier.pipeline.windows(stream, layout.window_s, layout.hop_s, min_dbfs=min_dbfs)


def embed_windows(classifier: Classifier, windows: Iterable[Window]) -> tuple[list[float], list[float], np.ndarray]:
    """All windows of one input embedded, ``batch_size`` at a time (only one batch of features is
    held): starts, ends, (N, D)."""
    starts: list[float] = []
    ends: list[float] = []
    vectors: list[np.ndarray] = []
    heard = (window for window in windows if window.features is not None)  # gated windows are skipped
    for group in batched(heard, classifier.settings.batch_size):
        features = [window.features for window in group if window.features is not None]
        vectors.extend(embeddings_or_raise(classifier.pipeline.embedder.embed_audio(features)))
        starts.extend(window.start_s for window in group)
        ends.extend(window.end_s for window in group)
    if not vectors:
        raise AudioTooShortError("no audio to search in")
    return starts, ends, np.stack(vectors).astype(np.float32)


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
    gated: int = 0


class FileEmbedder:
    """Embeds many files: ``workers`` threads hash, decode and featurize files; the calling thread
    embeds their windows together in model batches and yields each file as soon as it is complete.

    The model is the classifier's own embedder (the server's engine, when the server's classifier
    is given). Set ``stop`` to end early: files not complete are not yielded. With ``min_dbfs``
    (the silence gate) windows quieter than it are neither embedded nor stored, only counted.
    """

    def __init__(
        self,
        classifier: Classifier,
        layout: WindowLayout,
        *,
        workers: int = 2,
        stop: threading.Event | None = None,
        min_dbfs: float | None = None,
    ) -> None:
        check_min_dbfs(min_dbfs)
        self.classifier, self.layout, self.min_dbfs = classifier, layout, min_dbfs
        self.workers = max(1, workers)
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
            count, gated, end = 0, 0, 0.0
            windows = iter_windows(self.classifier, task.path, self.layout, source=task.path, min_dbfs=self.min_dbfs)
            for window in windows:
                end = window.end_s
                if window.features is None:
                    gated += 1
                    continue
                if self.stop.is_set() or not put(_Window(task, window.start_s, end, window.features)):
                    put(_Finished(task, sha256, error=_stopped()))
                    return
                count += 1
            if count + gated == 0:
                raise AudioTooShortError("no audio samples", source=task.path)
            put(_Finished(task, sha256, duration_s=end, windows=count, gated=gated))
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
            outcome.gated = item.gated
            expected[item.task.file_id] = item.windows if item.error is None and not item.unchanged else 0
            if outcome.error is not None or outcome.unchanged:
                pending = [window for window in pending if window.task.file_id != item.task.file_id]
            yield from self._complete(open_files, expected)
        if pending:
            self._embed(pending, open_files)
        yield from self._complete(open_files, expected)

    def _embed(self, windows: list[_Window], open_files: dict[int, FileVectors]) -> None:
        outcomes = self.classifier.pipeline.embedder.embed_audio([window.features for window in windows])
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
