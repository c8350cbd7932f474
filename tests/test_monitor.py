"""soundsift monitor: a file replayed as a real-time source into the monitor, alerts to SQLite and a webhook."""

from __future__ import annotations

import http.server
import itertools
import json
import logging
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from typing import ClassVar

import numpy as np
import pytest
import soundfile

from soundsift.cli.main import main
from soundsift.core.audio import load_audio
from soundsift.monitor.config import MonitorConfig
from soundsift.monitor.runner import MonitorService

pytestmark = pytest.mark.slow  # real-time replays of a 12 s recording

HANG_GUARD_S = 60  # only a hung monitor takes this long; no test waits for it otherwise


class Receiver(http.server.BaseHTTPRequestHandler):
    """A loopback webhook receiver that answers with the configured status (or hangs)."""

    status = 200
    delay_s = 0.0
    received: ClassVar[list[dict]] = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        time.sleep(self.delay_s)
        type(self).received.append(body)
        self.send_response(self.status)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def receiver():
    class Handler(Receiver):
        received: ClassVar[list[dict]] = []

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Handler, f"http://127.0.0.1:{server.server_address[1]}/hook"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def recording(tmp_path_factory, esc50_clips):
    """12 s: 4 s of near-silence, then 8 s of real clips."""
    clips = np.concatenate([load_audio(path, 16_000).samples for path in esc50_clips[:2]])[: 8 * 16_000]
    audio = np.concatenate([np.full(4 * 16_000, 1e-5, dtype=np.float32), clips])
    path = tmp_path_factory.mktemp("monitor") / "replay.wav"
    soundfile.write(path, audio, 16_000)
    return path


def options(recording, tmp_path, *, database=None, webhook_drain_s=10.0, **overrides):
    """A one-stream MonitorConfig replaying ``recording``; ``overrides`` are fields of its stream."""
    stream = dict(
        labels="dog, rain, siren",
        alert=["dog", "siren"],
        source=str(recording),
        window_s=2.0,
        hop_s=1.0,
        threshold=0.0,
        confirm="2/3",
        cooldown_s=5.0,
        min_dbfs=-60.0,
        speed=4.0,
    )
    stream.update(overrides)
    return MonitorConfig.model_validate(
        {"streams": [stream], "database": database or tmp_path / "events.db", "webhook_drain_s": webhook_drain_s}
    )


class Monitor:
    """A MonitorService with one stream, as these tests look at it."""

    def __init__(self, classifier, config, *, emit):
        self.service = MonitorService(classifier, config, emit=emit)
        (self.stream,) = self.service.streams
        self.stats, self.webhook = self.stream.stats, self.stream.webhook

    def stop(self):
        self.service.stop()

    def run(self):
        self.service.run()
        return self.stream.stats


def logged(database):
    with sqlite3.connect(database) as db:
        return db.execute("SELECT stream_time_s, label, score, source FROM events ORDER BY id").fetchall()


def test_replayed_file_alerts_after_confirmation_with_cooldown(classifier, recording, tmp_path):
    printed = []
    started = time.monotonic()
    stats = Monitor(classifier, options(recording, tmp_path), emit=printed.append).run()
    elapsed = time.monotonic() - started
    assert elapsed >= 12 / 4 * 0.9, "the file was not replayed in real time (at --speed 4)"
    assert stats.audio_s == pytest.approx(12.0, abs=0.1) and abs(stats.hops - 12) <= 1
    assert stats.gated >= 2, "near-silent windows must not be scored"
    rows = logged(tmp_path / "events.db")
    by_label = {label: [t for t, name, *_ in rows if name == label] for label in ("dog", "siren")}
    for label, times in by_label.items():
        assert times, f"no alert for {label}"
        assert times[0] >= 4.0, "alerts fired inside the gated silence"
        assert all(b - a >= 5.0 for a, b in itertools.pairwise(times)), "cooldown not respected"
    assert len(printed) == len(rows) and all(line.startswith("ALERT") for line in printed)
    assert 0 < stats.real_time_factor < 1


def test_alerts_reach_the_webhook(classifier, recording, tmp_path, receiver):
    handler, url = receiver
    Monitor(classifier, options(recording, tmp_path, webhook=url), emit=lambda _: None).run()
    rows = logged(tmp_path / "events.db")
    assert len(handler.received) == len(rows) > 0
    assert {(a["label"], a["stream_time_s"]) for a in handler.received} == {(r[1], r[0]) for r in rows}


@pytest.mark.parametrize(("status", "delay_s"), [(500, 0.0), (200, 3.0)])
def test_a_failing_or_hanging_webhook_never_stops_monitoring(
    classifier, recording, tmp_path, receiver, status, delay_s
):
    handler, url = receiver
    handler.status, handler.delay_s = status, delay_s
    monitor = Monitor(classifier, options(recording, tmp_path, webhook=url, webhook_timeout_s=0.5), emit=lambda _: None)
    monitor.webhook.retries = 1
    stats = monitor.run()
    assert stats.audio_s == pytest.approx(12.0, abs=0.1)
    assert len(logged(tmp_path / "events.db")) == stats.alerts > 0
    assert monitor.webhook.delivered == 0


def test_scoring_that_cannot_keep_up_skips_hops(classifier, recording, tmp_path):
    stats = Monitor(
        classifier, options(recording, tmp_path, speed=200.0, hop_s=0.25, window_s=1.0), emit=lambda _: None
    ).run()
    assert stats.skipped > 0 and stats.scored + stats.skipped + stats.gated == stats.hops


def test_cli_monitor_and_its_errors(tiny_model_dir, recording, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SOUNDSIFT_MODEL", str(tiny_model_dir))
    monkeypatch.setenv("SOUNDSIFT_DEVICE", "cpu")
    database = tmp_path / "cli.db"

    def argv(alert="siren", confirm="1/1"):
        return [
            "monitor",
            "--labels",
            "dog, rain, siren",
            "--alert",
            alert,
            "--source",
            str(recording),
            "--speed",
            "6",
            "--threshold",
            "0",
            "--confirm",
            confirm,
            "--cooldown",
            "100",
            "--db",
            str(database),
        ]

    assert main(argv()) == 0
    output = capsys.readouterr()
    assert "ALERT" in output.out and "real-time factor" in output.err
    assert [row[1] for row in logged(database)] == ["siren"]
    assert main(argv(alert="cat")) == 2
    assert "not in labels" in capsys.readouterr().err
    assert main(argv(confirm="3/2")) == 2
    assert main(argv(confirm="two")) == 2


def test_http_stream_source_is_read_like_a_live_source(classifier, recording, tmp_path):
    import functools

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(recording.parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/{recording.name}"
        stats = Monitor(
            classifier, options(recording, tmp_path, source=url, max_seconds=12.0), emit=lambda _: None
        ).run()
    finally:
        server.shutdown()
        server.server_close()
    # Served faster than real time, so most hops are skipped to keep up; some are scored.
    assert stats.audio_s == pytest.approx(12.0, abs=0.2) and stats.scored >= 1
    assert stats.scored + stats.skipped + stats.gated == stats.hops


def test_a_dropped_source_is_reopened_with_backoff_until_stopped(classifier, recording, tmp_path, closed_port):
    monitor = Monitor(
        classifier,
        options(recording, tmp_path, source=f"http://127.0.0.1:{closed_port}/live.wav", reconnect_max_s=1.0),
        emit=lambda _: None,
    )
    runner = threading.Thread(target=monitor.run)
    started = time.monotonic()
    runner.start()
    try:
        # It keeps trying: wait for the second attempt (the deadline is only a hang guard).
        deadline = started + HANG_GUARD_S
        while monitor.stats.reconnects < 2 and runner.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert monitor.stats.reconnects >= 2, f"{monitor.stats.reconnects} attempts, then it gave up or hung"
    finally:
        monitor.stop()
        runner.join(timeout=HANG_GUARD_S)
    elapsed = time.monotonic() - started
    assert not runner.is_alive(), "stop() did not end monitoring"
    # With backoff: each attempt after the first waits at least 1 s (the backoff starts at 1 s, here
    # capped at 1 s), so no more than 1 + elapsed attempts fit into the time this run really took,
    # however slow the machine. Without backoff there would be thousands.
    assert monitor.stats.reconnects <= 1 + elapsed, (monitor.stats.reconnects, f"{elapsed:.1f} s")


def test_a_dead_source_costs_almost_no_cpu_while_it_is_retried(classifier, recording, tmp_path, closed_port):
    monitor = Monitor(
        classifier,
        options(recording, tmp_path, source=f"http://127.0.0.1:{closed_port}/live.wav", reconnect_max_s=2.0),
        emit=lambda _: None,
    )
    runner = threading.Thread(target=monitor.run)
    runner.start()
    try:
        deadline = time.monotonic() + HANG_GUARD_S
        while monitor.stats.state != "reconnecting" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert monitor.stats.state == "reconnecting"
        cpu, wall = time.process_time(), time.monotonic()
        time.sleep(6.0)
        cpu, wall = time.process_time() - cpu, time.monotonic() - wall
    finally:
        monitor.stop()
        runner.join(timeout=HANG_GUARD_S)
    # Every thread of this process counts (reader, scorer, model engine); a loop that spins would
    # use a whole core, i.e. about 6 CPU seconds here. Waiting costs nothing but the attempts.
    assert cpu < 0.05 * wall, f"{cpu:.2f} CPU s in {wall:.1f} s of a dead source"
    assert 2 <= monitor.stats.reconnects <= 6, monitor.stats.reconnects  # 1, 2, 2, ... s apart, jittered


# ---- item 10 of "Safe to put in front of users": nothing lost silently at exit ------------------------


def webhook_states(database) -> list[str | None]:
    with sqlite3.connect(database) as db:
        return [row[0] for row in db.execute("SELECT webhook FROM events ORDER BY id")]


def test_alerts_still_queued_at_exit_are_drained_within_the_timeout(classifier, recording, tmp_path, receiver):
    handler, url = receiver
    handler.delay_s = 0.3  # slower than alerts come at this replay speed, so a backlog forms
    monitor = Monitor(
        classifier,
        options(recording, tmp_path, webhook=url, speed=10.0, cooldown_s=0.0, confirm="1/1", webhook_drain_s=30),
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
        options(
            recording,
            tmp_path,
            webhook=url,
            speed=10.0,
            cooldown_s=0.0,
            confirm="1/1",
            webhook_drain_s=0.5,
            webhook_timeout_s=5,
        ),
        emit=lambda _: None,
    )
    with caplog.at_level(logging.WARNING, logger="soundsift.monitor.runner"):
        stats = monitor.run()
    states = webhook_states(tmp_path / "events.db")
    assert stats.alerts > 2 and stats.webhook_undelivered > 0
    assert states.count("pending") == stats.webhook_undelivered
    assert set(states) <= {"sent", "pending"} and states.count("sent") <= len(handler.received)
    assert f"{stats.webhook_undelivered} webhook alert(s) were not delivered" in caplog.text
    assert "webhook alerts undelivered (in the log)" in stats.render()


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port that refuses connections for the whole test: bound and never listening, so no
    other process can take it meanwhile (a port released at once could be anyone's by the time the
    test connects to it)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        yield probe.getsockname()[1]


def test_an_unreachable_broker_is_said_at_start_and_undelivered_events_fail_the_run(
    tiny_model_dir, recording, tmp_path, monkeypatch, capsys, caplog, closed_port
):
    monkeypatch.setenv("SOUNDSIFT_MODEL", str(tiny_model_dir))
    monkeypatch.setenv("SOUNDSIFT_DEVICE", "cpu")
    port, database = closed_port, tmp_path / "events.db"
    config = tmp_path / "monitors.yaml"
    config.write_text(
        f"streams:\n  - name: hall\n    source: {recording}\n    labels: dog, siren\n    threshold: 0\n"
        f"    confirm: 1/1\n    cooldown_s: 100\n    speed: 6\n"
        f"mqtt:\n  url: mqtt://127.0.0.1:{port}/test\n  drain_s: 0.5\ndatabase: {database}\n"
    )
    with caplog.at_level(logging.WARNING, "soundsift.monitor"):
        assert main(["monitor", "--config", str(config)]) == 1
    said = [record.getMessage() for record in caplog.records]
    assert any(f"connection refused at 127.0.0.1:{port}" in line and "hall" in line for line in said), said
    assert "never reached the MQTT broker" in capsys.readouterr().err
    assert [row[1] for row in logged(database)], "the events stay in the log"


def test_a_tls_broker_that_does_not_speak_tls_is_named_as_a_tls_problem(closed_port):
    from soundsift.monitor.config import MqttConfig
    from soundsift.monitor.mqtt import broker_problem

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)

        def hang_up() -> None:
            connection, _ = listener.accept()
            connection.sendall(b"not tls at all\r\n\r\n")
            connection.close()

        thread = threading.Thread(target=hang_up, daemon=True)
        thread.start()
        problem = broker_problem(MqttConfig(url=f"mqtts://127.0.0.1:{listener.getsockname()[1]}"))
        thread.join(HANG_GUARD_S)
    assert problem is not None and "TLS handshake failed" in problem, problem
    assert "connection refused" in (broker_problem(MqttConfig(url=f"mqtt://127.0.0.1:{closed_port}")) or "")


@pytest.mark.slow  # an ONNX export on first use
def test_cli_monitor_runs_static_int8(tiny_model_dir, recording, tmp_path, monkeypatch, capsys):
    """--backend onnx --quantize int8-static reaches the monitor's model too (exported on first use,
    calibrated on the bundled clips)."""
    monkeypatch.setenv("SOUNDSIFT_MODEL", str(tiny_model_dir))
    monkeypatch.setenv("SOUNDSIFT_DEVICE", "cpu")
    monkeypatch.setenv("SOUNDSIFT_CACHE", str(tmp_path / "cache"))
    argv = ["monitor", "--labels", "dog, rain, siren", "--alert", "siren", "--source", str(recording)]
    argv += ["--speed", "6", "--threshold", "0", "--confirm", "1/1", "--db", str(tmp_path / "events.db")]
    assert main([*argv, "--backend", "onnx", "--quantize", "int8-static"]) == 0
    assert "real-time factor" in capsys.readouterr().err
    (folder,) = (tmp_path / "cache" / "onnx").iterdir()
    assert json.loads((folder / "manifest.json").read_text())["quantization"]["audio"] == "int8-static"
