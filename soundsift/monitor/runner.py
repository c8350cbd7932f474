"""Live monitoring: listen continuously to one or more streams, score the last window of each every hop,
and raise events on confirmed sounds.

Sources: the default microphone (sounddevice), any stream or device PyAV opens (rtsp://, http://,
alsa:hw:0, pulse:default), raw 16-bit PCM on stdin ("-"), or a file replayed in real time. Each stream
reads on its own thread and judges on another; one model serves every stream (a `ModelEngine`: the
windows due at the same time are embedded in one batch). If scoring falls behind, whole hops are
skipped (and counted) rather than queueing without end. Events go to stdout, a SQLite log, and
optionally a webhook, an MQTT broker (with Home Assistant discovery) and an evidence clip; a failing
sink never stops listening, and nothing is dropped silently.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from soundsift._version import __version__
from soundsift.core.adapter import Adapter
from soundsift.core.audio import level_dbfs, resample
from soundsift.core.classifier import Classifier
from soundsift.core.engine import ModelEngine
from soundsift.errors import ConfigurationError, SoundsiftError
from soundsift.monitor.config import MonitorConfig, MqttConfig, StreamConfig, object_id, redact_url
from soundsift.monitor.evidence import EvidenceStore, StreamEvidence
from soundsift.monitor.gate import AlertGate, LabelStates
from soundsift.monitor.health import HealthServer
from soundsift.monitor.mqtt import MqttSink
from soundsift.monitor.notify import Notifier
from soundsift.monitor.privacy import default_private_terms, private_labels
from soundsift.monitor.sinks import EventLog, Webhook
from soundsift.monitor.sources import is_finite, open_source

logger = logging.getLogger("soundsift.monitor")


@dataclass
class MonitorStats:
    hops: int = 0
    scored: int = 0
    gated: int = 0
    skipped: int = 0
    alerts: int = 0
    failed: int = 0
    bad_chunks: int = 0
    reconnects: int = 0
    audio_s: float = 0.0
    busy_s: float = 0.0
    webhook_undelivered: int = 0
    mqtt_undelivered: int = 0
    mqtt_events_undelivered: int = 0
    resent: int = 0
    """Alerts an earlier run left undelivered, sent again at this run's start."""
    notifications_resent: int = 0
    """Notifications an earlier run left pending, queued again at this run's start."""
    state: str = "starting"
    """starting, listening, reconnecting, ended or failed."""
    last_event: dict[str, Any] | None = None

    @property
    def real_time_factor(self) -> float:
        """Processing time per second of audio; below 1 keeps up with real time."""
        return self.busy_s / self.audio_s if self.audio_s else 0.0

    def render(self) -> str:
        return (
            f"{self.audio_s:.1f} s of audio, {self.hops} hops: {self.scored} scored, {self.gated} below the silence "
            f"gate, {self.skipped} skipped to keep up; {self.alerts} alerts; real-time factor "
            f"{self.real_time_factor:.2f}; {self.bad_chunks} bad chunks, {self.reconnects} reconnects"
            + (
                f"; {self.webhook_undelivered} webhook alerts undelivered (in the log)"
                if self.webhook_undelivered
                else ""
            )
            + (f"; {self.mqtt_undelivered} MQTT messages unacknowledged" if self.mqtt_undelivered else "")
        )

    def health(self) -> dict[str, Any]:
        values = asdict(self)
        values["real_time_factor"] = round(self.real_time_factor, 3)
        values["audio_s"], values["busy_s"] = round(self.audio_s, 2), round(self.busy_s, 2)
        return values


@dataclass
class _Shared:
    """What every stream of one process uses."""

    classifier: Classifier
    engine: ModelEngine
    log: EventLog
    emit: Callable[[str], None]
    stop: threading.Event
    evidence: EvidenceStore | None = None
    mqtt: MqttConfig | None = None
    logs: dict[Path, EventLog] = field(default_factory=dict)
    notifier: Notifier | None = None
    private_terms: tuple[str, ...] = ()


class StreamMonitor:
    """One stream: its reader thread, its windows, its gate and label states, and its sinks."""

    def __init__(self, config: StreamConfig, shared: _Shared, *, webhook_drain_s: float) -> None:
        self.config, self.shared, self.webhook_drain_s = config, shared, webhook_drain_s
        self.classifier = shared.classifier
        self.rate = self.classifier.sample_rate
        try:
            adapter = Adapter.load(config.adapter) if config.adapter else None
            self.prepared = self.classifier.prepare_labels(config.labels, adapter=adapter)
        except SoundsiftError as error:  # no labels, bad labels, an unreadable adapter or one of another model
            raise ConfigurationError(f"stream {config.name}: {error}") from None
        alert = config.alert or self.prepared.names
        unknown = (set(alert) | set(config.thresholds)) - set(self.prepared.names)
        if unknown:
            raise ConfigurationError(
                f"stream {config.name}: alert or thresholds name labels not in its labels: {', '.join(sorted(unknown))}"
            )
        self.alert = alert
        self.decision = self.classifier.pipeline.decision()
        self.gate = AlertGate(alert, needed=config.confirm_n, window=config.confirm_m, cooldown_s=config.cooldown_s)
        self.states = LabelStates(alert, hold_s=config.hold_s)
        self.stats = MonitorStats()
        self.source_name = redact_url(config.source)
        self.log = shared.log
        if config.database is not None:
            self.log = shared.logs.setdefault(config.database, EventLog(config.database))
        self.webhook = (
            Webhook(
                config.webhook,
                timeout_s=config.webhook_timeout_s,
                retries=config.webhook_retries,
                on_done=lambda alert, delivered: self.log.set_webhook_state(
                    alert["id"], "sent" if delivered else "failed"
                ),
            )
            if config.webhook
            else None
        )
        self.mqtt = (
            MqttSink(
                shared.mqtt,
                config.name,
                alert,
                model=self.classifier.model_id,
                on_event_delivered=lambda event_id: self.log.set_delivery(event_id, "mqtt", "sent"),
            )
            if shared.mqtt is not None and config.mqtt
            else None
        )
        self.private = private_labels(self.prepared, shared.private_terms)
        self.evidence = (
            StreamEvidence(
                shared.evidence,
                config.name,
                self.rate,
                longest_event_s=config.window_s + config.hop_s * config.confirm_m,
                guarded=bool(self.private),
                lag_s=config.window_s,
                on_withheld=lambda clip, reason: self.log.withhold_evidence(str(clip), reason),
            )
            if shared.evidence is not None and config.evidence
            else None
        )
        if self.evidence and not self.private and shared.private_terms:
            logger.warning(
                "stream %s: its evidence clips are not checked for speech: none of its labels is private "
                "(add 'speech' to its labels; see privacy in docs/smart-home.md)",
                config.name,
            )

    def stop(self) -> None:
        self.shared.stop.set()

    def resend_pending(self) -> None:
        """Alerts an earlier run raised but never delivered (the broker or the webhook was away
        when it ended) go out again first, oldest first, with their original times; each sink
        marks them sent as it delivers them, as it does new alerts."""
        for sink, send in (("webhook", self.webhook and self.webhook.send), ("mqtt", self.mqtt and self.mqtt.event)):
            if not send:
                continue
            for alert in self.log.pending(sink, self.config.name):
                send(alert)
                self.stats.resent += 1
        if self.shared.notifier:
            self.stats.notifications_resent = self.shared.notifier.resend(self.log, self.config.name)

    def run(self) -> MonitorStats:
        self.resend_pending()
        audio: queue.Queue[np.ndarray | None] = queue.Queue()
        reader = threading.Thread(
            target=self._read, args=(audio,), name=f"soundsift-source-{self.config.name}", daemon=True
        )
        reader.start()
        try:
            self._consume(audio)
        finally:
            if self.stats.state not in ("failed", "ended"):
                self.stats.state = "ended"
            if self.evidence:
                self.evidence.flush()
            if self.webhook:
                self.webhook.close(self.webhook_drain_s)
                self.stats.webhook_undelivered = self.webhook.undelivered
            if self.mqtt:
                self._set_states_off()
                self.mqtt.close()
                self.stats.mqtt_undelivered = self.mqtt.undelivered
                self.stats.mqtt_events_undelivered = self.mqtt.undelivered_events
        return self.stats

    # ---- reading --------------------------------------------------------------------------------

    def _read(self, audio: queue.Queue) -> None:
        """Reader thread: open the source, reconnect with backoff when it drops, end when a file ends.
        The stream is reported offline while its source is down, online once it delivers audio again."""
        config, stopping = self.config, self.shared.stop
        backoff = 1.0
        while not stopping.is_set():
            try:
                opener = open_source(
                    config.source, rate=config.source_rate, speed=config.speed, on_bad_chunk=self._count_bad_chunk
                )
                for block, rate in opener():
                    if stopping.is_set():
                        break
                    if self.stats.state != "listening":
                        self._set_state("listening")
                    audio.put(resample(block, rate, self.rate))
                    backoff = 1.0
                if is_finite(config.source):
                    break
                raise ConnectionError("the stream ended")
            except SoundsiftError as error:
                logger.error("stream %s: %s", config.name, error)
                self._set_state("failed")
                break
            except Exception as error:  # a live source dropped: reconnect
                self.stats.reconnects += 1
                self._set_state("reconnecting")
                # Jitter: monitors whose camera went down together do not all reconnect in step.
                wait_s = backoff * random.uniform(1.0, 1.25)
                logger.warning(
                    "stream %s: source failed (%s); reconnecting in %.1f s", config.name, error or "no audio", wait_s
                )
                stopping.wait(wait_s)
                backoff = min(config.reconnect_max_s, backoff * 2)
        audio.put(None)

    def _set_state(self, state: str) -> None:
        self.stats.state = state
        if self.mqtt:
            self.mqtt.set_online(state == "listening")

    def _count_bad_chunk(self) -> None:
        self.stats.bad_chunks += 1

    # ---- judging --------------------------------------------------------------------------------

    def _consume(self, audio: queue.Queue) -> None:
        window, hop = round(self.config.window_s * self.rate), round(self.config.hop_s * self.rate)
        ring = np.zeros(0, dtype=np.float32)
        pending = 0
        while not self.shared.stop.is_set():
            try:
                block = audio.get(timeout=0.5)
            except queue.Empty:
                continue
            if block is None:
                return
            if self.evidence:
                self.evidence.feed(block)
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
            if self.config.max_seconds and self.stats.audio_s >= self.config.max_seconds:
                return

    def _score(self, ring: np.ndarray) -> None:
        now = self.stats.audio_s
        if level_dbfs(ring) < self.config.min_dbfs:
            self.stats.gated += 1
            self._judged(len(ring), {})
            self._judge(now, {})
            return
        started = time.perf_counter()
        pipeline = self.classifier.pipeline
        try:
            (outcome,) = self.shared.engine.embed_audio([pipeline.features_of(ring.copy())])
            if isinstance(outcome, SoundsiftError):
                raise outcome
            result = pipeline.score(
                outcome,
                self.prepared,
                self.decision,
                source=self.source_name,
                duration_s=len(ring) / self.rate,
                silent=False,
            )
        except Exception:  # one window that cannot be scored must not end the stream: counted, logged
            self.stats.failed += 1
            logger.exception("stream %s: a window could not be scored", self.config.name)
            self._judge(now, {})
            return
        self.stats.busy_s += time.perf_counter() - started
        self.stats.scored += 1
        scores = {score.label: score.score for score in result.scores}
        self._judged(len(ring), scores)
        if self.mqtt:
            self.mqtt.scores(now, scores)
        self._judge(now, scores)

    def _judged(self, samples: int, scores: Mapping[str, float]) -> None:
        """The evidence clips' privacy guard learns that the last ``samples`` were judged, and whether
        a private label was heard in them (its score reached its threshold)."""
        if self.evidence and self.evidence.guard:
            end = self.evidence.ring.total
            heard = any(scores.get(label, -1.0) >= self.config.threshold_of(label) for label in self.private)
            self.evidence.judged(end - samples, end, private=heard)

    def _judge(self, now: float, scores: Mapping[str, float]) -> None:
        heard = {label: scores.get(label, -1.0) >= self.config.threshold_of(label) for label in self.alert}
        for label in self.gate.update(now, heard):
            self._alert(label, scores[label], now)
        for label, on in self.states.update(now, self.gate.confirmed).items():
            if self.mqtt:
                self.mqtt.state(label, on)

    def _set_states_off(self) -> None:
        for label, on in self.states.on.items():
            if on and self.mqtt:
                self.mqtt.state(label, False)

    def _alert(self, label: str, score: float, stream_time_s: float) -> None:
        first = self.gate.first_heard_s(label)
        start_s = max(0.0, (first if first is not None else stream_time_s) - self.config.window_s)
        now = datetime.now(timezone.utc)
        clip, withheld = (
            self.evidence.start(object_id(label), start_s, stream_time_s, now) if self.evidence else (None, None)
        )
        alert: dict[str, Any] = {
            "time_utc": now.isoformat(timespec="milliseconds"),
            "stream": self.config.name,
            "stream_time_s": round(stream_time_s, 2),
            "start_s": round(start_s, 2),
            "end_s": round(stream_time_s, 2),
            "label": label,
            "score": round(score, 4),
            "source": self.source_name,
            "evidence": str(clip) if clip else None,
            "evidence_withheld": withheld,
            "soundsift_version": __version__,
        }
        self.stats.alerts += 1
        self.stats.last_event = alert
        self.shared.emit(
            f"ALERT {alert['time_utc']}  {self.config.name}  {label}  score {score:.2f}  (stream {stream_time_s:.1f} s)"
        )
        pending = {"webhook": "pending" if self.webhook else None, "mqtt": "pending" if self.mqtt else None}
        event_id = self.log.add(alert, **pending)
        alert = {"id": event_id, **alert}
        if self.webhook:
            self.webhook.send(alert)
        if self.mqtt:
            self.mqtt.event(alert)
        if self.shared.notifier:
            self.shared.notifier.submit(alert, self.log)


class MonitorService:
    """Every stream of a `MonitorConfig`, one model for all of them, and the shared sinks."""

    def __init__(self, classifier: Classifier, config: MonitorConfig, *, emit: Callable[[str], None] = print) -> None:
        self.config = config
        self._stop = threading.Event()
        # One model for every stream: the windows streams have due are embedded together. No gathering
        # delay: at light load a window is embedded alone at once; under load the windows that arrive
        # while the model is busy form the next batch by themselves.
        self.engine = ModelEngine([classifier.pipeline.embedder], max_batch_size=64, max_wait_s=0.0)
        evidence = EvidenceStore(config.evidence) if config.evidence else None
        privacy = config.privacy
        self.shared = _Shared(
            classifier=classifier,
            engine=self.engine,
            log=EventLog(config.database),
            emit=emit,
            stop=self._stop,
            evidence=evidence,
            mqtt=config.mqtt,
            notifier=Notifier(config.notify, clips=evidence) if config.notify else None,
            private_terms=(default_private_terms() if privacy.default_private_labels else ())
            + tuple(privacy.private_labels),
        )
        self.streams: list[StreamMonitor] = []
        try:
            for stream in config.streams:
                self.streams.append(StreamMonitor(stream, self.shared, webhook_drain_s=config.webhook_drain_s))
        except BaseException:
            for started in self.streams:
                if started.mqtt:
                    started.mqtt.client.loop_stop()
            self._close_sinks()
            raise
        self.started = time.monotonic()
        self.health_server: HealthServer | None = None
        if config.health_port is not None:
            try:
                self.health_server = HealthServer(config.health_host, config.health_port, self.health)
            except OSError as error:
                self._close_sinks()
                raise ConfigurationError(
                    f"cannot serve health on {config.health_host}:{config.health_port}: {error.strerror}"
                ) from None

    def stop(self) -> None:
        self._stop.set()

    def health(self) -> dict[str, Any]:
        """The streams' state, for supervisors (`--health-port`)."""
        streams = {
            stream.config.name: {
                "source": stream.source_name,
                "mqtt_connected": stream.mqtt.connected.is_set() if stream.mqtt else None,
                **stream.stats.health(),
            }
            for stream in self.streams
        }
        stats = self.engine.stats["audio"]
        return {
            "ok": all(entry["state"] in ("starting", "listening", "ended") for entry in streams.values()),
            "uptime_s": round(time.monotonic() - self.started, 1),
            "model": self.shared.classifier.model_id,
            "version": __version__,
            "scorer": {
                "batches": stats.batches,
                "windows": stats.items,
                "mean_batch": round(stats.mean_batch, 2),
                "largest_batch": stats.largest_batch,
            },
            "streams": streams,
            "notify": self.shared.notifier.health() if self.shared.notifier else None,
        }

    def run(self) -> dict[str, MonitorStats]:
        """Listen until every stream has ended (files, stdin) or `stop` is called."""
        self.engine.start()
        if self.health_server:
            self.health_server.start()
        threads = [
            threading.Thread(target=stream.run, name=f"soundsift-stream-{stream.config.name}", daemon=True)
            for stream in self.streams
        ]
        try:
            for thread in threads:
                thread.start()
            while any(thread.is_alive() for thread in threads):
                for thread in threads:
                    thread.join(0.2)
        finally:
            self._stop.set()
            for thread in threads:
                thread.join()
            self.engine.close()
            if self.health_server:
                self.health_server.close()
            self._close_sinks()
        return {stream.config.name: stream.stats for stream in self.streams}

    def _close_sinks(self) -> None:
        if self.shared.notifier and self.config.notify:
            self.shared.notifier.close(self.config.notify.drain_s)
        for log in [self.shared.log, *self.shared.logs.values()]:
            log.close()
