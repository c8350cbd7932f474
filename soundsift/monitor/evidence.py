"""Evidence clips: the audio around each confirmed event, written to disk, kept within an age and
size budget.

Each stream keeps its last seconds of audio in a fixed ring (bounded memory). On an event the clip
from ``before_s`` before the event's start to ``after_s`` after its confirmation is cut: what the
ring holds now, then the audio that follows until the clip is complete. Clips are written as
``<dir>/<stream>/<UTC time>_<label id>.flac`` (or .opus) under a temporary name and renamed when
complete, so a clip that exists is whole. The path is known, and reported with the event, at once;
the file appears ``after_s`` seconds later.

With private labels (soundsift.monitor.privacy) a stream's clips are also judged: a clip is written
only once every window that overlaps it has been judged, and never when a private label was heard in
one of them or part of it was never judged; it is then *withheld* (``on_withheld``), and the event
says so. That waits one window longer than ``after_s`` before a clip is written.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import soundfile

from soundsift.errors import ConfigurationError
from soundsift.monitor.config import EvidenceConfig
from soundsift.monitor.privacy import PRIVATE, UNJUDGED, ClipGuard

logger = logging.getLogger("soundsift.monitor")

SUFFIXES = {"flac": ".flac", "opus": ".opus"}
# A stream writes at most this many clips at once; more means a label set that fires on everything,
# and keeping them all would grow memory with the number of labels.
MAX_PENDING_CLIPS = 16
# How many clips' outcomes (written, withheld, failed) are remembered for whoever waits on one.
KEPT_OUTCOMES = 1024
WRITTEN, FAILED = "written", "failed"


class AudioRing:
    """The last ``seconds`` of a stream in a fixed float32 buffer, addressed by absolute sample index
    (samples since the stream started)."""

    def __init__(self, seconds: float, rate: int) -> None:
        self._buffer = np.zeros(max(1, round(seconds * rate)), dtype=np.float32)
        self.total = 0
        """Samples written since the start."""

    def extend(self, block: np.ndarray) -> None:
        size = len(self._buffer)
        dropped = max(0, len(block) - size)  # a block longer than the ring: only its end is kept
        kept = block[dropped:]
        start = (self.total + dropped) % size
        first = min(len(kept), size - start)
        self._buffer[start : start + first] = kept[:first]
        self._buffer[: len(kept) - first] = kept[first:]
        self.total += len(block)

    def since(self, start: int) -> np.ndarray:
        """The samples from absolute index ``start`` (or the oldest kept, if later) up to now."""
        size = len(self._buffer)
        start = max(start, self.total - size, 0)
        indices = np.arange(start, self.total) % size
        return self._buffer[indices]


class EvidenceStore:
    """The clip folder, shared by every stream: writing clips and deleting old ones."""

    def __init__(self, config: EvidenceConfig) -> None:
        self.config = config
        self.dir = config.dir.expanduser().resolve()  # events carry absolute paths, whatever the cwd
        self.suffix = SUFFIXES[config.format]
        self._lock = threading.Lock()
        self.written = self.deleted = self.withheld = 0
        self._outcomes: OrderedDict[Path, str | None] = OrderedDict()
        self._settled = threading.Condition()
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ConfigurationError(
                f"cannot create the evidence folder: {error.strerror}", source=str(self.dir)
            ) from None
        self.prune()

    def path_for(self, stream: str, label_id: str, when: datetime) -> Path:
        stamp = when.strftime("%Y%m%dT%H%M%S.%f")[:-3] + "Z"
        return self.dir / stream / f"{stamp}_{label_id}{self.suffix}"

    def write(self, path: Path, samples: np.ndarray, rate: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".part")
        if self.config.format == "flac":
            soundfile.write(partial, samples, rate, format="FLAC", subtype="PCM_16")
        else:
            soundfile.write(partial, samples, rate, format="OGG", subtype="OPUS")
        os.replace(partial, path)
        self.written += 1
        self.prune()

    def expect(self, path: Path) -> None:
        """A clip will be written to ``path`` (or withheld, or fail): `wait` can wait for it."""
        with self._settled:
            self._outcomes[path] = None
            while len(self._outcomes) > KEPT_OUTCOMES:
                self._outcomes.popitem(last=False)

    def settle(self, path: Path, outcome: str) -> None:
        """The clip at ``path`` was written (WRITTEN), withheld (its reason) or not written (FAILED)."""
        with self._settled:
            if path in self._outcomes:
                self._outcomes[path] = outcome
            self._settled.notify_all()

    def wait(self, path: Path, timeout_s: float) -> str | None:
        """The outcome of the clip at ``path``: WRITTEN, FAILED, a withholding reason, or None when it
        is still being recorded after ``timeout_s``. A clip this process never expected (one an earlier
        run announced) is WRITTEN when the file is there, FAILED otherwise."""
        with self._settled:
            if path not in self._outcomes:
                return WRITTEN if path.is_file() else FAILED
            self._settled.wait_for(lambda: self._outcomes.get(path, FAILED) is not None, timeout_s)
            return self._outcomes.get(path, FAILED)

    def prune(self) -> None:
        """Delete clips older than max_age_days, then the oldest until the total fits max_total_mb (the
        newest is kept whatever its size: the clip of the event just reported must exist).
        Only this store's clips (one level of stream folders, our suffix) are ever touched."""
        with self._lock:
            clips = []
            for path in self.dir.glob(f"*/*{self.suffix}"):
                try:
                    stat = path.stat()
                except FileNotFoundError:  # deleted meanwhile (by hand, or another process)
                    continue
                clips.append((stat.st_mtime, stat.st_size, path))
            clips.sort()
            now = time.time()
            total = sum(size for _, size, _ in clips)
            max_age_s = self.config.max_age_days * 86_400 if self.config.max_age_days else None
            max_bytes = self.config.max_total_mb * 1e6 if self.config.max_total_mb else None
            for index, (mtime, size, path) in enumerate(clips):
                too_old = max_age_s is not None and now - mtime > max_age_s
                newest = index == len(clips) - 1
                too_much = max_bytes is not None and total > max_bytes and not newest
                if not (too_old or too_much):
                    break
                path.unlink(missing_ok=True)
                total -= size
                self.deleted += 1
                logger.info("evidence clip %s deleted (%s)", path, "age" if too_old else "size budget")


@dataclass
class _PendingClip:
    path: Path
    end: int
    """Absolute sample index where the clip ends."""
    start: int = 0
    """Absolute sample index where it starts."""
    parts: list[np.ndarray] = field(default_factory=list)


class StreamEvidence:
    """One stream's ring and the clips it is still recording.

    ``guarded`` (the stream has private labels): the stream reports every judged window (`judged`)
    to a `ClipGuard`, and a clip is decided once the windows up to ``lag_s`` (one window) past its end
    were judged: written when the guard allows it, withheld otherwise."""

    def __init__(
        self,
        store: EvidenceStore,
        stream: str,
        rate: int,
        *,
        longest_event_s: float,
        guarded: bool = False,
        lag_s: float = 0.0,
        on_written: Callable[[Path], None] = lambda _: None,
        on_withheld: Callable[[Path, str], None] = lambda *_: None,
    ) -> None:
        self.store, self.stream, self.rate = store, stream, rate
        self.on_written, self.on_withheld = on_written, on_withheld
        seconds = store.config.before_s + longest_event_s + lag_s
        self.ring = AudioRing(seconds, rate)
        self.guard = ClipGuard(keep=round((seconds + store.config.after_s + lag_s) * rate)) if guarded else None
        self.lag = round(lag_s * rate)
        self._pending: list[_PendingClip] = []
        self.skipped = 0

    def feed(self, block: np.ndarray) -> None:
        """Every block of the stream's audio, in order."""
        self.ring.extend(block)
        for clip in self._pending:
            clip.parts.append(block)
        self._write_complete()

    def judged(self, start: int, end: int, *, private: bool) -> None:
        """With a guard: the window of samples [start, end) was judged; ``private``: a private label
        was heard in it. Clips it overlaps are dropped at once then (their audio is not kept)."""
        if self.guard is None:
            return
        self.guard.judged(start, end, private=private)
        if private:
            for clip in [clip for clip in self._pending if clip.start < end and start < clip.end]:
                self._withhold(clip, PRIVATE)
        self._write_complete()

    def start(self, label_id: str, start_s: float, end_s: float, when: datetime) -> tuple[Path | None, str | None]:
        """Begin the clip of an event that started at ``start_s`` and was confirmed at ``end_s`` (stream
        seconds). Returns where it will be written, or None, and why not (a withholding reason, or
        None when too many clips are pending)."""
        config = self.store.config
        start = max(0, round((start_s - config.before_s) * self.rate))
        if self.guard is not None and self.guard.heard_private(start, self.ring.total):
            self.store.withheld += 1
            return None, PRIVATE
        if len(self._pending) >= MAX_PENDING_CLIPS:
            self.skipped += 1
            logger.warning(
                "stream %s: %d clips already pending; no clip for this event", self.stream, MAX_PENDING_CLIPS
            )
            return None, None
        clip = _PendingClip(
            self.store.path_for(self.stream, label_id, when), round((end_s + config.after_s) * self.rate), start
        )
        clip.parts.append(self.ring.since(start))
        self.store.expect(clip.path)
        self._pending.append(clip)
        self._write_complete()
        return clip.path, None

    def flush(self) -> None:
        """The stream ended: write the pending clips with the audio there is (with a guard, the audio
        up to the last judged window)."""
        for clip in self._pending:
            samples = np.concatenate(clip.parts)
            if self.guard is not None:
                first = self.ring.total - len(samples)  # the sample index the clip's audio starts at
                clip.end = min(clip.end, self.guard.judged_until)
                samples = samples[: max(0, clip.end - first)]
                reason = self.guard.verdict(clip.start, clip.end) if len(samples) else UNJUDGED
                if reason:
                    self._withhold(clip, reason)
                    continue
            logger.info("stream %s ended before %s was complete; written shorter", self.stream, clip.path.name)
            self._write(clip, samples)
        self._pending = []

    def _write_complete(self) -> None:
        done = [clip for clip in self._pending if self._decided(clip)]
        for clip in done:
            if self.guard is not None and (reason := self.guard.verdict(clip.start, clip.end)):
                self._withhold(clip, reason)
                continue
            samples = np.concatenate(clip.parts)
            self._write(clip, samples[: len(samples) - (self.ring.total - clip.end)])
        self._pending = [clip for clip in self._pending if clip not in done]

    def _decided(self, clip: _PendingClip) -> bool:
        if self.ring.total < clip.end:
            return False
        # Every window that overlaps the clip starts before its end: once a window ending `lag` (one
        # window) past it was judged, no later one can overlap it.
        return self.guard is None or self.guard.judged_until >= clip.end + self.lag

    def _withhold(self, clip: _PendingClip, reason: str) -> None:
        if clip in self._pending:
            self._pending.remove(clip)
        self.store.withheld += 1
        self.store.settle(clip.path, reason)
        logger.info("stream %s: evidence clip %s withheld (%s)", self.stream, clip.path.name, reason)
        self.on_withheld(clip.path, reason)

    def _write(self, clip: _PendingClip, samples: np.ndarray) -> None:
        try:
            self.store.write(clip.path, samples, self.rate)
        except (OSError, RuntimeError) as error:  # a full disk must not stop listening
            logger.error("stream %s: evidence clip %s not written: %s", self.stream, clip.path, error)
            self.store.settle(clip.path, FAILED)
            return
        self.store.settle(clip.path, WRITTEN)
        self.on_written(clip.path)
