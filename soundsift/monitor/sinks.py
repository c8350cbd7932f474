"""Where alerts go besides stdout: a SQLite event log, and a webhook that retries without ever
blocking the listening loop and never drops an alert silently."""

from __future__ import annotations

import json
import logging
import queue
import sqlite3
import threading
import urllib.request
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import ClassVar

logger = logging.getLogger("soundsift.monitor")


class EventLog:
    """One row per alert in SQLite: when, which stream and label, the score, the event's span in
    stream seconds, its evidence clip, and the delivery state of each sink ('pending' until the
    webhook answered or the broker acknowledged, then 'sent' or 'failed'; NULL without that sink).
    Alerts that never reached a sink therefore stay findable, and can be sent again.

    Notifications (soundsift.monitor.notify) have a table of their own, one row per event and target:
    ``notifications(event_id, target, state, attempts, updated_utc)``, state 'pending', 'sent',
    'failed', or 'quiet_hours' / 'cooldown' when the target's rule held it back."""

    # Columns added since the first release, created in logs written by an older soundsift.
    _ADDED: ClassVar[dict[str, str]] = {
        "webhook": "TEXT",
        "stream": "TEXT",
        "start_s": "REAL",
        "end_s": "REAL",
        "evidence": "TEXT",
        "mqtt": "TEXT",
        "evidence_withheld": "TEXT",
    }
    _FIELDS = (
        "id",
        "time_utc",
        "stream",
        "stream_time_s",
        "start_s",
        "end_s",
        "label",
        "score",
        "source",
        "evidence",
        "evidence_withheld",
    )

    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(str(path), check_same_thread=False)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY, time_utc TEXT NOT NULL, "
                "stream_time_s REAL NOT NULL, label TEXT NOT NULL, score REAL NOT NULL, source TEXT NOT NULL)"
            )
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(events)")}
            for name, kind in self._ADDED.items():
                if name not in columns:
                    self._db.execute(f"ALTER TABLE events ADD COLUMN {name} {kind}")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS notifications (id INTEGER PRIMARY KEY, event_id INTEGER NOT NULL, "
                "target TEXT NOT NULL, state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, updated_utc TEXT)"
            )
            self._db.commit()

    def add(self, alert: dict, *, webhook: str | None, mqtt: str | None = None) -> int:
        with self._lock:
            cursor = self._db.execute(
                "INSERT INTO events (time_utc, stream_time_s, label, score, source, webhook, stream, start_s, end_s, "
                "evidence, mqtt, evidence_withheld) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    alert["time_utc"],
                    alert["stream_time_s"],
                    alert["label"],
                    alert["score"],
                    alert["source"],
                    webhook,
                    alert.get("stream"),
                    alert.get("start_s"),
                    alert.get("end_s"),
                    alert.get("evidence"),
                    mqtt,
                    alert.get("evidence_withheld"),
                ),
            )
            self._db.commit()
            return int(cursor.lastrowid or 0)

    def pending(self, sink: str, stream: str) -> list[dict]:
        """The alerts of ``stream`` that ``sink`` never delivered (state 'pending': the run that
        raised them ended first), oldest first, as they were sent, with their original times."""
        if sink not in ("webhook", "mqtt"):
            raise ValueError(f"unknown sink {sink!r}")
        with self._lock:
            rows = self._db.execute(
                f"SELECT {', '.join(self._FIELDS)} FROM events WHERE {sink} = 'pending' AND stream = ? ORDER BY id",
                (stream,),
            ).fetchall()
        return [{**dict(zip(self._FIELDS, row)), "resent": True} for row in rows]

    def add_notification(self, event_id: int, target: str, state: str) -> int:
        with self._lock:
            cursor = self._db.execute(
                "INSERT INTO notifications (event_id, target, state, updated_utc) VALUES (?, ?, ?, ?)",
                (event_id, target, state, _now()),
            )
            self._db.commit()
            return int(cursor.lastrowid or 0)

    def set_notification(self, row: int, state: str, *, attempts: int) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE notifications SET state = ?, attempts = ?, updated_utc = ? WHERE id = ?",
                (state, attempts, _now(), row),
            )
            self._db.commit()

    def pending_notifications(self, stream: str) -> list[tuple[dict, str, int]]:
        """(event, target, notification row) of every notification of ``stream`` still 'pending',
        oldest event first, the event as `pending` gives it."""
        columns = ", ".join(f"events.{name}" for name in self._FIELDS)
        with self._lock:
            rows = self._db.execute(
                f"SELECT {columns}, notifications.target, notifications.id FROM notifications "
                "JOIN events ON events.id = notifications.event_id "
                "WHERE notifications.state = 'pending' AND events.stream = ? ORDER BY events.id, notifications.id",
                (stream,),
            ).fetchall()
        fields = len(self._FIELDS)
        return [
            ({**dict(zip(self._FIELDS, row[:fields])), "resent": True}, row[fields], row[fields + 1]) for row in rows
        ]

    def withhold_evidence(self, clip: str, reason: str) -> None:
        """The clip an event announced was withheld after all (a private sound heard after the event)."""
        with self._lock:
            self._db.execute(
                "UPDATE events SET evidence = NULL, evidence_withheld = ? WHERE evidence = ?", (reason, clip)
            )
            self._db.commit()

    def set_webhook_state(self, event_id: int, state: str) -> None:
        self.set_delivery(event_id, "webhook", state)

    def set_delivery(self, event_id: int, sink: str, state: str) -> None:
        if sink not in ("webhook", "mqtt"):
            raise ValueError(f"unknown sink {sink!r}")
        with self._lock:
            self._db.execute(f"UPDATE events SET {sink} = ? WHERE id = ?", (state, event_id))
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


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _drain(pending: queue.Queue) -> Iterator[dict | None]:
    while True:
        try:
            yield pending.get_nowait()
        except queue.Empty:
            return
