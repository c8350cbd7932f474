"""Live monitoring: listen continuously, score the last window every hop, alert on confirmed sounds.

Sources: the default microphone (sounddevice), any stream or device PyAV opens (rtsp://, http://,
alsa:hw:0, pulse:default), raw 16-bit PCM on stdin ("-"), or a file replayed in real time. Audio is
read on its own thread; if scoring falls behind, whole hops are skipped (and counted) rather than
queueing without end. Alerts go to stdout, a SQLite log and optionally a webhook; a failing webhook
is retried on its own thread and never stops listening.
"""

from __future__ import annotations

import json
import logging
import queue
import sqlite3
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from soundsift.core.audio import DecodedAudio, is_silent, resample, stream_audio
from soundsift.core.classifier import Classifier
from soundsift.errors import ConfigurationError, SoundsiftError
from soundsift.monitor.gate import AlertGate

logger = logging.getLogger("soundsift.monitor.runner")


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


class EventLog:
    """One row per alert in SQLite, with the webhook delivery state of each: 'pending' until the
    webhook answered, then 'sent' or 'failed' (NULL without a webhook). Alerts that never reached
    the webhook therefore stay findable, and can be sent again."""

    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(str(path), check_same_thread=False)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY, time_utc TEXT NOT NULL, "
                "stream_time_s REAL NOT NULL, label TEXT NOT NULL, score REAL NOT NULL, source TEXT NOT NULL, "
                "webhook TEXT)"
            )
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(events)")}
            if "webhook" not in columns:  # a log written by an older soundsift
                self._db.execute("ALTER TABLE events ADD COLUMN webhook TEXT")
            self._db.commit()

    def add(self, alert: dict, *, webhook: str | None) -> int:
        with self._lock:
            cursor = self._db.execute(
                "INSERT INTO events (time_utc, stream_time_s, label, score, source, webhook) VALUES (?, ?, ?, ?, ?, ?)",
                (alert["time_utc"], alert["stream_time_s"], alert["label"], alert["score"], alert["source"], webhook),
            )
            self._db.commit()
            return int(cursor.lastrowid or 0)

    def set_webhook_state(self, event_id: int, state: str) -> None:
        with self._lock:
            self._db.execute("UPDATE events SET webhook = ? WHERE id = ?", (state, event_id))
            self._db.commit()

    def close(self) -> None:
        with self._lock:
            self._db.close()


class Webhook:
    """POSTs alerts as JSON from a worker thread, with a timeout and retries with backoff.

    ``on_done(alert, delivered)`` is called for every alert the worker finished with. `close` gives
    the backlog ``drain_s`` seconds; what is still unsent then is counted in ``undelivered`` and
    logged, never dropped silently."""

    def __init__(
        self, url: str, *, timeout_s: float, retries: int, on_done: Callable[[dict, bool], None] = lambda *_: None
    ) -> None:
        self.url, self.timeout_s, self.retries, self.on_done = url, timeout_s, retries, on_done
        self.delivered = self.failed = self.undelivered = 0
        self._queue: queue.Queue[dict | None] = queue.Queue(maxsize=1000)
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._run, name="soundsift-webhook", daemon=True)
        self._thread.start()

    def send(self, alert: dict) -> None:
        try:
            self._queue.put_nowait(alert)
        except queue.Full:
            self.undelivered += 1
            logger.warning("webhook backlog full; alert for %s not sent (it stays in the event log)", alert["label"])

    def close(self, drain_s: float = 10.0) -> None:
        """Send what is queued for at most ``drain_s`` seconds, then stop and count the rest."""
        self._queue.put(None)
        self._thread.join(drain_s)
        self._closing.set()  # ends retries and backoff waits at once
        self._thread.join(self.timeout_s + 1.0)
        left = sum(1 for alert in _drain(self._queue) if alert is not None)
        self.undelivered += left + (1 if self._thread.is_alive() else 0)
        if self.undelivered:
            logger.warning(
                "%d webhook alert(s) were not delivered before exit; they are in the event log with webhook='pending'",
                self.undelivered,
            )

    def _run(self) -> None:
        while not self._closing.is_set() and (alert := self._queue.get()) is not None:
            delivered = self._post(alert)
            if delivered:
                self.delivered += 1
            elif self._closing.is_set():
                self.undelivered += 1
                continue
            else:
                self.failed += 1
            self.on_done(alert, delivered)

    def _post(self, alert: dict) -> bool:
        body = json.dumps(alert).encode()
        for attempt in range(self.retries + 1):
            request = urllib.request.Request(self.url, data=body, headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                    if 200 <= response.status < 300:
                        return True
            except Exception as error:  # any network failure is retried, then logged
                logger.warning("webhook attempt %d failed: %s", attempt + 1, error)
            if self._closing.wait(min(8.0, 0.5 * 2**attempt)):
                return False
        return False


def _drain(pending: queue.Queue) -> Iterator[dict | None]:
    while True:
        try:
            yield pending.get_nowait()
        except queue.Empty:
            return


def open_source(
    options: MonitorOptions, on_bad_chunk: Callable[[], None] = lambda: None
) -> Callable[[], Iterator[tuple[np.ndarray, int]]]:
    """A function that opens the source and yields (mono float32 block, sample rate)."""
    source = options.source
    if source == "mic":
        return lambda: _microphone(options)
    if source == "-":
        return lambda: _stdin_pcm(options.source_rate)
    if Path(source).is_file():
        return lambda: _replayed_file(Path(source), options.speed)
    return lambda: _pyav_live(source, on_bad_chunk)


def _microphone(options: MonitorOptions) -> Iterator[tuple[np.ndarray, int]]:
    try:
        import sounddevice
    except (ImportError, OSError) as error:
        raise ConfigurationError(
            f"the microphone source needs sounddevice and PortAudio ({error}): pip install 'soundsift[live]'"
        ) from None
    blocks: queue.Queue[np.ndarray] = queue.Queue()
    rate = options.source_rate
    with sounddevice.InputStream(
        samplerate=rate,
        channels=1,
        dtype="float32",
        blocksize=rate // 10,
        callback=lambda data, *_: blocks.put(data[:, 0].copy()),
    ):
        while True:
            yield blocks.get(), rate


def _stdin_pcm(rate: int) -> Iterator[tuple[np.ndarray, int]]:
    chunk = rate // 10 * 2
    while data := sys.stdin.buffer.read(chunk):
        usable = len(data) - len(data) % 2
        yield np.frombuffer(data[:usable], dtype="<i2").astype(np.float32) / 32768.0, rate


def _replayed_file(path: Path, speed: float) -> Iterator[tuple[np.ndarray, int]]:
    stream = stream_audio(path, 48_000, block_s=0.1)
    started, played = time.monotonic(), 0.0
    for block in stream.blocks:
        played += len(block) / 48_000
        delay = started + played / speed - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        yield block, 48_000


def _pyav_live(url: str, on_bad_chunk: Callable[[], None]) -> Iterator[tuple[np.ndarray, int]]:
    import av

    device_format, _, device = (
        url.partition(":") if url.split(":")[0] in ("alsa", "pulse", "avfoundation", "dshow") else (None, "", url)
    )
    with av.open(device or url, format=device_format, timeout=10) as container:
        stream = container.streams.audio[0]
        to_float = av.AudioResampler(format="fltp", layout="mono")
        for packet in container.demux(stream):
            try:
                frames = packet.decode()
            except av.error.FFmpegError as error:
                logger.warning("bad chunk skipped: %s", error)
                on_bad_chunk()
                continue
            for frame in frames:
                for converted in to_float.resample(frame):
                    yield converted.to_ndarray()[0].astype(np.float32), converted.sample_rate


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
                for block, rate in open_source(self.options, self._count_bad_chunk)():
                    if self._stop.is_set():
                        break
                    audio.put(resample(block, rate, self.rate))
                    backoff = 1.0
                if self._finite_source():
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

    def _finite_source(self) -> bool:
        return self.options.source == "-" or Path(self.options.source).is_file()

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
