"""Notifications anywhere: events to phones, chats and mail through Apprise (ntfy, Telegram, Discord,
Pushover, e-mail, Home Assistant's notify, JSON/form webhooks and a hundred more, one URL each).

Each target has a rule (labels, streams, minimum score, quiet hours, cooldown, attach the clip) and
its own queue and worker thread, so a target that is down delays nobody else and never the listening:
the stream only decides the rule and queues. A delivery that fails is retried with backoff
(``retry_s`` doubling up to ``retry_max_s``, ``retries`` times), logged at each attempt, then marked
failed. Every decision is a row of the event log's ``notifications`` table: ``pending`` until the
target took it, then ``sent`` or ``failed``; ``quiet_hours`` and ``cooldown`` when the rule held it
back. What is still pending when the monitor stops is sent again at the next start
(`Notifier.resend`), like the webhook's and the broker's pending events.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from datetime import time as clock_time
from pathlib import Path
from typing import Any

from soundsift.errors import ConfigurationError
from soundsift.monitor.config import NotifyConfig, NotifyTarget, redact_url
from soundsift.monitor.evidence import WRITTEN, EvidenceStore
from soundsift.monitor.privacy import PRIVATE
from soundsift.monitor.sinks import EventLog
from soundsift.optional import APPRISE

logger = logging.getLogger("soundsift.monitor")

PENDING, SENT, FAILED, QUIET, COOLDOWN = "pending", "sent", "failed", "quiet_hours", "cooldown"
QUEUE_SIZE = 1000


def in_quiet_hours(window: str, at: clock_time) -> bool:
    """Whether the local time ``at`` falls in ``window`` ("22:00-07:00": from 22:00 up to, not
    including, 07:00; a window whose end is before its start crosses midnight)."""
    start, end = (int(part[:2]) * 60 + int(part[3:]) for part in window.split("-"))
    minute = at.hour * 60 + at.minute
    return start <= minute < end if start < end else minute >= start or minute < end


def message(alert: dict[str, Any], *, attached: bool) -> tuple[str, str]:
    """The title and body of an event's notification."""
    when = datetime.fromisoformat(alert["time_utc"]).astimezone()
    lines = [
        f"{alert['label']} heard on {alert['stream']} at {when:%H:%M:%S} on {when:%Y-%m-%d} "
        f"(score {alert['score']:.2f})."
    ]
    if alert.get("resent"):
        lines.append("Sent late: the monitor restarted before this could be delivered.")
    withheld = alert.get("evidence_withheld")
    if withheld == PRIVATE:
        lines.append("No recording: a private sound (such as speech) was heard around it.")
    elif withheld:
        lines.append("No recording: part of the audio around it was not checked for private sounds.")
    elif attached:
        lines.append("The recording is attached.")
    elif alert.get("evidence"):
        lines.append(f"Recording: {alert['evidence']}")
    return f"{alert['label']} — {alert['stream']}", "\n".join(lines)


def apprise_for(target: NotifyTarget) -> Any:
    """An Apprise object for the target's URL; ConfigurationError when Apprise does not know it."""
    apprise = APPRISE.require("notifications (notify:, --notify)")
    notifier = apprise.Apprise()
    if not notifier.add(target.url):
        raise ConfigurationError(
            f"notify target {target.target_name}: Apprise does not know the URL {redact_url(target.url)!r} "
            "(see its list of services and their URL forms)"
        )
    return notifier


def check_targets(config: NotifyConfig) -> None:
    """Every target's URL is one Apprise can send to (before a model is loaded for nothing)."""
    for target in config.targets:
        apprise_for(target)


@dataclass
class _Job:
    alert: dict[str, Any]
    log: EventLog
    row: int
    queued: float = field(default_factory=time.monotonic)


@dataclass
class TargetStats:
    sent: int = 0
    failed: int = 0
    retried: int = 0
    quiet_hours: int = 0
    cooldown: int = 0
    undelivered: int = 0


class NotifyWorker:
    """One target: its rule, its Apprise object, its queue and the thread that delivers."""

    def __init__(self, target: NotifyTarget, settings: NotifyConfig, clips: EvidenceStore | None) -> None:
        self.target, self.settings, self.clips = target, settings, clips
        self.name = target.target_name
        self.apprise = apprise_for(target)
        self.stats = TargetStats()
        self._last: dict[tuple[str, str], float] = {}
        self._queue: queue.Queue[_Job] = queue.Queue(maxsize=QUEUE_SIZE)
        self._finishing, self._closing = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"soundsift-notify-{self.name}", daemon=True)
        self._thread.start()

    def wants(self, alert: dict[str, Any]) -> bool:
        target = self.target
        return (
            (target.labels is None or alert["label"] in target.labels)
            and (target.streams is None or alert["stream"] in target.streams)
            and alert["score"] >= target.min_score
        )

    def decide(self, alert: dict[str, Any], now: datetime) -> str:
        """PENDING (send it), QUIET or COOLDOWN; a PENDING decision starts the label's cooldown."""
        if self.target.quiet_hours and in_quiet_hours(self.target.quiet_hours, now.time()):
            self.stats.quiet_hours += 1
            return QUIET
        key, moment = (alert["stream"], alert["label"]), time.monotonic()
        if moment - self._last.get(key, -float("inf")) < self.target.cooldown_s:
            self.stats.cooldown += 1
            return COOLDOWN
        self._last[key] = moment
        return PENDING

    def enqueue(self, job: _Job) -> None:
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            self.stats.undelivered += 1
            logger.warning("notify %s: backlog full; this notification stays pending in the event log", self.name)

    def finish(self) -> None:
        """No more jobs: the worker ends once it has delivered what is queued."""
        self._finishing.set()

    def close(self, deadline: float) -> None:
        """Wait for the queued deliveries until the monotonic ``deadline``, then stop; what is left
        stays pending in the event log."""
        self._thread.join(max(0.0, deadline - time.monotonic()))
        self._closing.set()  # ends retries, backoff and clip waits at once
        self._thread.join(30.0)
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
            self.stats.undelivered += 1
        if self.stats.undelivered:
            logger.warning(
                "notify %s: %d notification(s) not delivered before exit; they are pending in the event log "
                "and are sent at the next start",
                self.name,
                self.stats.undelivered,
            )

    def _run(self) -> None:
        while not self._closing.is_set():
            try:
                job = self._queue.get(timeout=0.2)
            except queue.Empty:
                if self._finishing.is_set():
                    return
                continue
            try:
                self._deliver(job)
            except Exception:  # a bug in one delivery must not end the worker: logged, left pending
                self.stats.undelivered += 1
                logger.exception("notify %s: delivery failed unexpectedly", self.name)

    def _deliver(self, job: _Job) -> None:
        clip = self._clip(job)
        if self._closing.is_set():
            self.stats.undelivered += 1
            return
        title, body = message(job.alert, attached=clip is not None)
        settings = self.settings
        attempts = settings.retries + 1
        for attempt in range(attempts):
            if self._attempt(title, body, clip):
                self.stats.sent += 1
                job.log.set_notification(job.row, SENT, attempts=attempt + 1)
                return
            if attempt + 1 == attempts:
                break
            wait = min(settings.retry_max_s, settings.retry_s * 2**attempt)
            self.stats.retried += 1
            logger.warning(
                "notify %s: attempt %d of %d failed for event %s; retrying in %.1f s",
                self.name,
                attempt + 1,
                attempts,
                job.alert["id"],
                wait,
            )
            job.log.set_notification(job.row, PENDING, attempts=attempt + 1)
            if self._closing.wait(wait):
                self.stats.undelivered += 1
                return
        self.stats.failed += 1
        job.log.set_notification(job.row, FAILED, attempts=attempts)
        logger.error("notify %s: event %s not delivered after %d attempts", self.name, job.alert["id"], attempts)

    def _attempt(self, title: str, body: str, clip: Path | None) -> bool:
        try:
            # Apprise 1.x answers True/False (None: nothing to notify), 2.x a result that is true on success.
            return bool(self.apprise.notify(title=title, body=body, attach=str(clip) if clip else None))
        except Exception as error:  # any failure of a plugin counts as a failed attempt
            logger.warning("notify %s: %s", self.name, error)
            return False

    def _clip(self, job: _Job) -> Path | None:
        """The event's clip to attach, once written; None without one (no attach, withheld, failed, late)."""
        path = job.alert.get("evidence")
        if not (self.target.attach and path and self.clips is not None):
            return None
        deadline = job.queued + self.clips.config.after_s + self.settings.clip_wait_s
        outcome = None
        while outcome is None and not self._closing.is_set() and (left := deadline - time.monotonic()) > 0:
            outcome = self.clips.wait(Path(path), min(0.5, left))
        if outcome is None:
            logger.warning("notify %s: clip %s not written in time; sent without it", self.name, path)
        if outcome not in (None, WRITTEN):
            job.alert = {**job.alert, "evidence": None}
            if outcome == PRIVATE:
                job.alert["evidence_withheld"] = PRIVATE
        return Path(path) if outcome == WRITTEN else None


class Notifier:
    """Every notify target of a monitor; streams `submit` their events, `resend` at start."""

    def __init__(self, config: NotifyConfig, *, clips: EvidenceStore | None = None) -> None:
        self.config = config
        self.workers: list[NotifyWorker] = []
        try:
            for target in config.targets:
                self.workers.append(NotifyWorker(target, config, clips))
        except BaseException:
            self.close(0.0)
            raise

    def submit(self, alert: dict[str, Any], log: EventLog) -> None:
        """Decide each target's rule for a new event (which has its ``id`` in ``log``) and queue it."""
        now = datetime.now().astimezone()
        for worker in self.workers:
            if not worker.wants(alert):
                continue
            state = worker.decide(alert, now)
            row = log.add_notification(alert["id"], worker.name, state)
            if state == PENDING:
                worker.enqueue(_Job(alert, log, row))

    def resend(self, log: EventLog, stream: str) -> int:
        """Queue the notifications of ``stream`` an earlier run left pending, oldest first; returns how many."""
        workers = {worker.name: worker for worker in self.workers}
        queued = 0
        for alert, target, row in log.pending_notifications(stream):
            worker = workers.get(target)
            if worker is None:
                logger.warning(
                    "notify: event %s's pending notification is for %s, no longer a target", alert["id"], target
                )
                continue
            worker.enqueue(_Job(alert, log, row))
            queued += 1
        return queued

    def close(self, drain_s: float) -> None:
        """Give every target's backlog ``drain_s`` seconds in all, then stop."""
        deadline = time.monotonic() + drain_s
        for worker in self.workers:
            worker.finish()
        for worker in self.workers:
            worker.close(deadline)

    def health(self) -> dict[str, dict[str, int]]:
        return {worker.name: vars(worker.stats).copy() for worker in self.workers}
