"""Item 10: the monitor never drops webhook alerts silently. At exit the backlog gets a bounded
drain; what is still unsent is counted, logged, and stays in the SQLite log as 'pending'."""

from __future__ import annotations

import logging
import sqlite3

from soundsift.monitor import Monitor
from tests.test_monitor import options, receiver, recording  # noqa: F401 - fixtures used below


def webhook_states(database) -> list[str | None]:
    with sqlite3.connect(database) as db:
        return [row[0] for row in db.execute("SELECT webhook FROM events ORDER BY id")]


def test_alerts_still_queued_at_exit_are_drained_within_the_timeout(classifier, recording, tmp_path, receiver):
    handler, url = receiver
    handler.delay_s = 0.3  # slower than alerts come at this replay speed, so a backlog forms
    monitor = Monitor(
        classifier,
        options(recording, tmp_path, webhook=url, speed=40.0, cooldown_s=0.0, webhook_drain_s=30.0),
        emit=lambda _: None,
    )
    stats = monitor.run()
    states = webhook_states(tmp_path / "events.db")
    assert stats.alerts > 2 and len(handler.received) == stats.alerts
    assert states == ["sent"] * stats.alerts and stats.webhook_undelivered == 0


def test_what_cannot_be_sent_in_time_is_counted_logged_and_kept(classifier, recording, tmp_path, receiver, caplog):
    handler, url = receiver
    handler.delay_s = 2.0
    monitor = Monitor(
        classifier,
        options(recording, tmp_path, webhook=url, speed=40.0, cooldown_s=0.0, webhook_drain_s=0.5, webhook_timeout_s=5),
        emit=lambda _: None,
    )
    with caplog.at_level(logging.WARNING, logger="soundsift.monitor"):
        stats = monitor.run()
    states = webhook_states(tmp_path / "events.db")
    assert stats.alerts > 2 and stats.webhook_undelivered > 0
    assert states.count("pending") == stats.webhook_undelivered
    assert set(states) <= {"sent", "pending"} and states.count("sent") <= len(handler.received)
    assert f"{stats.webhook_undelivered} webhook alert(s) were not delivered" in caplog.text
    assert "webhook alerts undelivered (in the log)" in stats.render()
