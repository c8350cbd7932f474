"""Live monitoring: listen continuously, score the last window every hop, alert on confirmed sounds.

Sources: the default microphone (sounddevice), any stream or device PyAV opens (rtsp://, http://,
alsa:hw:0, pulse:default), raw 16-bit PCM on stdin ("-"), or a file replayed in real time. Audio is
read on its own thread; if scoring falls behind, whole hops are skipped (and counted) rather than
queueing without end. Alerts go to stdout, a SQLite log and optionally a webhook; a failing webhook
is retried on its own thread and never stops listening.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from soundsift.core.audio import DecodedAudio, is_silent, resample
from soundsift.core.classifier import Classifier
from soundsift.errors import ConfigurationError, SoundsiftError
from soundsift.monitor.gate import AlertGate
from soundsift.monitor.sinks import EventLog, Webhook
from soundsift.monitor.sources import is_finite, open_source

logger = logging.getLogger("soundsift.monitor")


@dataclass
class MonitorOptions:
    labels: str
    alert: list[str]
    source: str = "mic"
    window_s: float = 2.0
    hop_s: float = 1.0
    threshold: float = 0.5
    confirm_n: int = 2
    confirm_m: int = 3
    cooldown_s: float = 30.0
    gate_db: float = -50.0
    database: Path = Path("soundsift-events.db")
    webhook: str | None = None
    webhook_timeout_s: float = 5.0
    webhook_retries: int = 3
    webhook_drain_s: float = 10.0
    speed: float = 1.0
    source_rate: int = 16_000
    max_seconds: float | None = None
    reconnect_max_s: float = 30.0


@dataclass
class MonitorStats:
    hops: int = 0
    scored: int = 0
    gated: int = 0
    skipped: int = 0
    alerts: int = 0
    bad_chunks: int = 0
    reconnects: int = 0
    audio_s: float = 0.0
    busy_s: float = 0.0
    webhook_undelivered: int = 0

    @property
    def real_time_factor(self) -> float:
        """Processing time per second of audio; below 1 keeps up with real time."""
        return self.busy_s / self.audio_s if self.audio_s else 0.0

    def render(self) -> str:
        return (
            f"{self.audio_s:.1f} s of audio, {self.hops} hops: {self.scored} scored, {self.gated} below the volume "
            f"gate, {self.skipped} skipped to keep up; {self.alerts} alerts; real-time factor "
            f"{self.real_time_factor:.2f}; {self.bad_chunks} bad chunks, {self.reconnects} reconnects"
            + (
                f"; {self.webhook_undelivered} webhook alerts undelivered (in the log)"
                if self.webhook_undelivered
                else ""
            )
        )


class Monitor:
    def __init__(self, classifier: Classifier, options: MonitorOptions, *, emit: Callable[[str], None] = print) -> None:
        if not 1 <= options.confirm_n <= options.confirm_m:
            raise ConfigurationError("--confirm needs 1 <= N <= M")
        if not 0 < options.hop_s <= options.window_s:
            raise ConfigurationError("--hop must be above 0 and at most --window")
        self.classifier, self.options, self.emit = classifier, options, emit
        self.prepared = classifier.prepare_labels(options.labels)
        unknown = set(options.alert) - set(self.prepared.names)
        if unknown:
            raise ConfigurationError(f"--alert names labels not in --labels: {', '.join(sorted(unknown))}")
        self.gate = AlertGate(
            options.alert, needed=options.confirm_n, window=options.confirm_m, cooldown_s=options.cooldown_s
        )
        self.log = EventLog(options.database)
        self.webhook = (
            Webhook(
                options.webhook,
                timeout_s=options.webhook_timeout_s,
                retries=options.webhook_retries,
                on_done=lambda alert, delivered: self.log.set_webhook_state(
                    alert["id"], "sent" if delivered else "failed"
                ),
            )
            if options.webhook
            else None
        )
        self.stats = MonitorStats()
        self.rate = classifier.sample_rate
        self._stop = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> MonitorStats:
        audio: queue.Queue[np.ndarray | None] = queue.Queue()
        reader = threading.Thread(target=self._read, args=(audio,), name="soundsift-source", daemon=True)
        reader.start()
        try:
            self._consume(audio)
        finally:
            self._stop.set()
            if self.webhook:
                self.webhook.close(self.options.webhook_drain_s)
                self.stats.webhook_undelivered = self.webhook.undelivered
            self.log.close()
        return self.stats

    def _read(self, audio: queue.Queue) -> None:
        """Reader thread: open the source, reconnect with backoff when it drops, end when a file ends."""
        backoff = 1.0
        while not self._stop.is_set():
            try:
                opener = open_source(
                    self.options.source,
                    rate=self.options.source_rate,
                    speed=self.options.speed,
                    on_bad_chunk=self._count_bad_chunk,
                )
                for block, rate in opener():
                    if self._stop.is_set():
                        break
                    audio.put(resample(block, rate, self.rate))
                    backoff = 1.0
                if is_finite(self.options.source):
                    break
            except SoundsiftError as error:
                logger.error("%s", error)
                break
            except Exception as error:  # a live source dropped: reconnect
                self.stats.reconnects += 1
                logger.warning("source failed (%s); reconnecting in %.0f s", error, backoff)
                self._stop.wait(backoff)
                backoff = min(self.options.reconnect_max_s, backoff * 2)
        audio.put(None)

    def _count_bad_chunk(self) -> None:
        self.stats.bad_chunks += 1

    def _consume(self, audio: queue.Queue) -> None:
        window, hop = round(self.options.window_s * self.rate), round(self.options.hop_s * self.rate)
        ring = np.zeros(0, dtype=np.float32)
        pending = 0
        while not self._stop.is_set():
            try:
                block = audio.get(timeout=0.5)
            except queue.Empty:
                continue
            if block is None:
                return
            ring = np.concatenate([ring, block])[-window:]
            pending += len(block)
            self.stats.audio_s += len(block) / self.rate
            while pending >= hop:
                pending -= hop
                self.stats.hops += 1
                # A hop's worth of audio already waits: score the newest window later instead.
                if audio.qsize() * len(block) + pending >= hop:
                    self.stats.skipped += 1
                    continue
                self._score(ring)
            if self.options.max_seconds and self.stats.audio_s >= self.options.max_seconds:
                return

    def _score(self, ring: np.ndarray) -> None:
        now = self.stats.audio_s
        if is_silent(ring, self.options.gate_db):
            self.stats.gated += 1
            self.gate.update(now, {})
            return
        started = time.perf_counter()
        result = self.classifier.score(DecodedAudio(ring.copy(), self.rate, self.options.source, False), self.prepared)
        self.stats.busy_s += time.perf_counter() - started
        self.stats.scored += 1
        scores = {score.label: score.score for score in result.scores}
        for label in self.gate.update(
            now, {label: scores[label] >= self.options.threshold for label in self.options.alert}
        ):
            self._alert(label, scores[label], now)

    def _alert(self, label: str, score: float, stream_time_s: float) -> None:
        alert = {
            "time_utc": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
            "stream_time_s": round(stream_time_s, 2),
            "label": label,
            "score": round(score, 4),
            "source": self.options.source,
        }
        self.stats.alerts += 1
        self.emit(f"ALERT {alert['time_utc']}  {label}  score {score:.2f}  (stream {stream_time_s:.1f} s)")
        event_id = self.log.add(alert, webhook="pending" if self.webhook else None)
        if self.webhook:
            self.webhook.send({"id": event_id, **alert})
