"""Notifications through Apprise to a real receiver on 127.0.0.1 (its json:// and form:// schemes):
the message, the attached clip, cooldown, quiet hours, a target that is down (retried, logged,
listening goes on), and what an earlier run left pending, sent at the next start.

Events are made certain as in the other monitor tests: threshold 0 (every scored window is heard),
near-silent stretches below the volume gate where nothing is."""

from __future__ import annotations

import base64
import io
import logging
import socket
import sqlite3
from datetime import datetime, timedelta
from datetime import time as clock_time
from pathlib import Path

import numpy as np
import pytest
import soundfile

from soundsift.monitor.config import MonitorConfig
from soundsift.monitor.notify import in_quiet_hours, message
from soundsift.monitor.runner import MonitorService
from tests.data.audio import tone
from tests.monitor.receiver import Receiver

pytestmark = pytest.mark.slow  # replays in (accelerated) real time, real HTTP deliveries

RATE = 16_000


def recording(path: Path, *parts: tuple[str, float]) -> Path:
    pieces = [
        tone(seconds, RATE)[:, 0] if kind == "tone" else np.full(int(seconds * RATE), 1e-5) for kind, seconds in parts
    ]
    soundfile.write(path, np.concatenate(pieces).astype(np.float32), RATE)
    return path


def config(
    tmp_path: Path, source: Path, targets: list[dict] | None, *, stream: dict | None = None, **shared
) -> MonitorConfig:
    """One stream replaying ``source`` (``stream``: fields changed); ``targets`` None: no notify section."""
    stream = {
        **{
            "name": "porch",
            "labels": "siren, rain",
            "alert": ["siren"],
            "source": str(source),
            "window_s": 1.0,
            "hop_s": 0.5,
            "threshold": 0.0,
            "confirm": "1/1",
            "cooldown_s": 10.0,
            "gate_db": -60.0,
            "speed": 8.0,
        },
        **(stream or {}),
    }
    notify = {"targets": targets, "retries": 2, "retry_s": 0.05, "drain_s": 30.0, **shared.pop("notify", {})}
    data = {"streams": [stream], "database": shared.pop("database", tmp_path / "events.db"), **shared}
    return MonitorConfig.model_validate({**data, "notify": notify} if targets is not None else data)


def notifications(database: Path) -> list[tuple[int, str, str, int]]:
    with sqlite3.connect(database) as db:
        return db.execute("SELECT event_id, target, state, attempts FROM notifications ORDER BY id").fetchall()


def dead_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])  # closed again: nothing listens there


def test_message_and_attached_clip_reach_json_and_form_targets(classifier, tmp_path):
    source = recording(tmp_path / "porch.wav", ("quiet", 2), ("tone", 1.5), ("quiet", 2))
    with Receiver() as receiver:
        targets = [
            {"url": receiver.url("json", "phone"), "name": "phone", "attach": True},
            {"url": receiver.url("form", "mail"), "name": "mail", "attach": True},
        ]
        evidence = {"dir": tmp_path / "clips", "before_s": 1.0, "after_s": 1.0}
        stats = MonitorService(classifier, config(tmp_path, source, targets, evidence=evidence)).run()["porch"]
        assert stats.alerts == 1
        requests = receiver.wait_for(2)
    by_path = {request.path: request for request in requests}
    body = by_path["/phone"].json()
    assert body["title"] == "siren — porch"
    assert body["message"].startswith("siren heard on porch at ") and "(score " in body["message"]
    assert "The recording is attached." in body["message"]
    (attachment,) = body["attachments"]
    clip = soundfile.read(io.BytesIO(base64.b64decode(attachment["base64"])))[0]
    assert attachment["filename"].endswith(".flac") and len(clip) > 0
    written = sorted((tmp_path / "clips" / "porch").glob("*.flac"))
    assert len(written) == 1 and attachment["filename"] == written[0].name
    assert len(clip) == soundfile.info(written[0]).frames, "the attachment is the clip as written"
    form = by_path["/mail"].form()
    files = [content for filename, content in form.values() if filename]
    assert files and files[0][:4] == b"fLaC", "the form target got no FLAC file"
    assert sorted(notifications(tmp_path / "events.db")) == [(1, "mail", "sent", 1), (1, "phone", "sent", 1)]


def test_cooldown_holds_back_the_same_label_per_target(classifier, tmp_path):
    # 4 s of tone with a 1 s stream cooldown: several events; one target hears of the first only.
    source = recording(tmp_path / "porch.wav", ("quiet", 1), ("tone", 4), ("quiet", 1))
    with Receiver() as receiver:
        targets = [
            {"url": receiver.url("json", "calm"), "name": "calm", "cooldown_s": 600},
            {"url": receiver.url("json", "eager"), "name": "eager", "cooldown_s": 0},
        ]
        cfg = config(tmp_path, source, targets, stream={"cooldown_s": 1.0})
        stats = MonitorService(classifier, cfg).run()["porch"]
        assert stats.alerts >= 3
        receiver.wait_for(stats.alerts + 1)
        paths = [request.path for request in receiver.requests]
    assert paths.count("/calm") == 1 and paths.count("/eager") == stats.alerts
    rows = notifications(tmp_path / "events.db")
    assert [state for _, target, state, _ in rows if target == "calm"] == ["sent"] + ["cooldown"] * (stats.alerts - 1)


def test_quiet_hours_hold_notifications_back(classifier, tmp_path):
    now = datetime.now()
    window = f"{now - timedelta(minutes=2):%H:%M}-{now + timedelta(minutes=3):%H:%M}"  # may cross midnight
    source = recording(tmp_path / "porch.wav", ("quiet", 1), ("tone", 1.5), ("quiet", 1))
    with Receiver() as receiver:
        targets = [
            {"url": receiver.url("json", "night"), "name": "night", "quiet_hours": window},
            {"url": receiver.url("json", "always"), "name": "always"},
        ]
        stats = MonitorService(classifier, config(tmp_path, source, targets)).run()["porch"]
        receiver.wait_for(stats.alerts)
        paths = {request.path for request in receiver.requests}
    assert stats.alerts == 1 and paths == {"/always"}
    assert sorted(notifications(tmp_path / "events.db")) == [(1, "always", "sent", 1), (1, "night", "quiet_hours", 0)]


def test_quiet_hours_window_crosses_midnight():
    assert in_quiet_hours("22:00-07:00", clock_time(23, 59)) and in_quiet_hours("22:00-07:00", clock_time(0, 0))
    assert in_quiet_hours("22:00-07:00", clock_time(6, 59)) and not in_quiet_hours("22:00-07:00", clock_time(7, 0))
    assert not in_quiet_hours("22:00-07:00", clock_time(12, 0)) and not in_quiet_hours(
        "22:00-07:00", clock_time(21, 59)
    )
    assert in_quiet_hours("09:30-17:00", clock_time(9, 30)) and not in_quiet_hours("09:30-17:00", clock_time(17, 0))


def test_target_down_is_retried_logged_and_listening_goes_on(classifier, tmp_path, caplog):
    source = recording(tmp_path / "porch.wav", ("quiet", 1), ("tone", 2), ("quiet", 1))
    caplog.set_level(logging.WARNING, logger="soundsift.monitor")
    with Receiver(fail_first=2) as flaky, Receiver(delay_s=1.0) as slow:
        targets = [
            {"url": f"json://127.0.0.1:{dead_port()}/down", "name": "down", "cooldown_s": 0},
            {"url": flaky.url("json", "flaky"), "name": "flaky", "cooldown_s": 0},
            {"url": slow.url("json", "slow"), "name": "slow", "cooldown_s": 0},
        ]
        service = MonitorService(classifier, config(tmp_path, source, targets, stream={"cooldown_s": 0.5}))
        stats = service.run()["porch"]
        flaky.wait_for(stats.alerts)
        slow.wait_for(stats.alerts)
    assert stats.audio_s == pytest.approx(4.0) and stats.alerts >= 2
    with sqlite3.connect(tmp_path / "events.db") as db:
        times = [datetime.fromisoformat(row[0]) for row in db.execute("SELECT time_utc FROM events ORDER BY id")]
    # At speed 8 the events come within half a second; waiting on the slow target would space them 1 s apart.
    assert (times[-1] - times[0]).total_seconds() < 1.0, "detection waited for a delivery"
    rows = notifications(tmp_path / "events.db")
    assert [(state, attempts) for _, target, state, attempts in rows if target == "down"] == [
        ("failed", 3)
    ] * stats.alerts
    flaky_rows = [(state, attempts) for _, target, state, attempts in rows if target == "flaky"]
    assert flaky_rows == [("sent", 3)] + [("sent", 1)] * (stats.alerts - 1), flaky_rows  # two 500s, then through
    assert [state for _, target, state, _ in rows if target == "slow"] == ["sent"] * stats.alerts
    logged = [record.getMessage() for record in caplog.records]
    assert any("notify down: attempt 1 of 3 failed for event 1" in line for line in logged), logged
    assert any("notify down: event 1 not delivered after 3 attempts" in line for line in logged), logged
    assert service.health()["notify"]["down"]["failed"] == stats.alerts


def test_notifications_left_pending_are_sent_at_the_next_start(classifier, tmp_path):
    source = recording(tmp_path / "porch.wav", ("quiet", 1), ("tone", 1.5), ("quiet", 1))
    down = {"url": f"json://127.0.0.1:{dead_port()}/phone", "name": "phone"}
    # The first run's target is down and it stops before the retries are over: the delivery stays pending.
    first = config(tmp_path, source, [down], notify={"retries": 20, "retry_s": 5.0, "drain_s": 0.5})
    stats = MonitorService(classifier, first).run()["porch"]
    assert stats.alerts == 1 and notifications(tmp_path / "events.db") == [(1, "phone", "pending", 1)]
    quiet = recording(tmp_path / "quiet.wav", ("quiet", 1))  # raises nothing new
    with Receiver() as receiver:
        again = config(tmp_path, quiet, [{"url": receiver.url("json", "phone"), "name": "phone"}])
        restarted = MonitorService(classifier, again).run()["porch"]
        (request,) = receiver.wait_for(1)
    assert restarted.notifications_resent == 1 and restarted.alerts == 0
    assert "Sent late: the monitor restarted" in request.json()["message"]
    assert notifications(tmp_path / "events.db") == [(1, "phone", "sent", 1)]
    third = MonitorService(classifier, again).run()["porch"]
    assert third.notifications_resent == 0, "a delivered notification is not sent twice"


def test_labels_streams_and_min_score_choose_the_events(classifier, tmp_path):
    source = recording(tmp_path / "porch.wav", ("quiet", 1), ("tone", 1.5), ("quiet", 1))
    with Receiver() as receiver:
        targets = [
            {"url": receiver.url("json", "rain"), "name": "rain-only", "labels": ["rain"]},
            {"url": receiver.url("json", "high"), "name": "high", "min_score": 1.0},
            {"url": receiver.url("json", "porch"), "name": "porch", "streams": ["porch"], "labels": "siren"},
        ]
        cfg = config(tmp_path, source, targets)
        stats = MonitorService(classifier, cfg).run()["porch"]
        receiver.wait_for(1)
        paths = [request.path for request in receiver.requests]
    assert stats.alerts == 1 and stats.last_event is not None and stats.last_event["score"] < 1.0
    assert paths == ["/porch"]
    assert notifications(tmp_path / "events.db") == [(1, "porch", "sent", 1)]


def test_message_says_when_a_clip_was_withheld_or_resent():
    alert = {"label": "dog", "stream": "hall", "score": 0.71, "time_utc": "2026-12-01T03:00:00.000+00:00"}
    title, body = message({**alert, "evidence": None, "evidence_withheld": "private", "resent": True}, attached=False)
    assert title == "dog — hall" and "(score 0.71)" in body
    assert "Sent late" in body and "No recording: a private sound" in body
    _, plain = message({**alert, "evidence": "/clips/hall/x.flac"}, attached=False)
    assert "Recording: /clips/hall/x.flac" in plain and "Sent late" not in plain


def test_cli_notify_flags(run, tmp_path):
    source = recording(tmp_path / "porch.wav", ("quiet", 1), ("tone", 1.5), ("quiet", 1))
    common = ["monitor", "--labels", "siren, rain", "--source", str(source), "--speed", "8", "--threshold", "0",
              "--confirm", "1/1", "--window", "1", "--hop", "0.5", "--gate-db", "-60",
              "--db", str(tmp_path / "e.db")]  # fmt: skip
    with Receiver() as receiver:
        code, _, err = run(*common, "--notify", receiver.url("json", "a"), "--notify", receiver.url("form", "b"),
                           "--notify-labels", "siren", "--notify-cooldown", "0")  # fmt: skip
        assert code == 0, err
        requests = receiver.wait_for(2)
    assert sorted(request.path for request in requests) == ["/a", "/b"]
    code, _, err = run(*common, "--notify", "nosuchservice://x/y")
    assert code == 2 and "Apprise does not know the URL" in err and "Traceback" not in err
    code, _, err = run(*common, "--notify", receiver.url(), "--notify-quiet-hours", "25:00-07:00")
    assert code == 2 and "--notify-quiet-hours" in err and "HH:MM-HH:MM" in err
    code, _, err = run(*common, "--notify-cooldown", "5")
    assert code == 2 and "need --notify URL" in err
