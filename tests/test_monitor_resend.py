"""Nothing lost across restarts: alerts a run raised but never delivered (the broker or the webhook
was away when it ended; they are 'pending' in the event log) go out again when the monitor next
starts, oldest first, with their original times, and are then marked sent. A real broker."""

from __future__ import annotations

import sqlite3
import time

import numpy as np
import paho.mqtt.client as mqtt
import pytest
import soundfile

from soundsift.monitor.config import MonitorConfig
from soundsift.monitor.runner import MonitorService
from soundsift.monitor.sinks import EventLog
from tests.monitor.broker import Broker, Recorder

pytestmark = [pytest.mark.slow, pytest.mark.broker]
HANG_GUARD_S = 60.0


@pytest.fixture
def broker(tmp_path):
    server = Broker(tmp_path / "broker")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def subscribed(broker: Broker, topic: str) -> Recorder:
    """A recorder of ``topic`` proven subscribed: it has received a probe published after it."""
    recorder = Recorder(broker, topic)
    probe = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    probe.connect("127.0.0.1", broker.port)
    probe.loop_start()
    try:
        deadline = time.monotonic() + HANG_GUARD_S
        while not recorder.on(topic) and time.monotonic() < deadline:
            probe.publish(topic, b'{"probe": true}', qos=1).wait_for_publish(5)
            time.sleep(0.1)
    finally:
        probe.loop_stop()
        probe.disconnect()
    assert recorder.on(topic), "the recorder never got its subscription"
    return recorder


def earlier_alerts(database) -> list[dict]:
    """Two alerts of stream 'porch' an earlier run logged while its broker was away."""
    log = EventLog(database)
    alerts = [
        {"time_utc": f"2026-12-01T0{hour}:00:00.000+00:00", "stream": "porch", "stream_time_s": 12.0 * hour,
         "start_s": 12.0 * hour - 2, "end_s": 12.0 * hour, "label": "siren", "score": 0.9, "source": "mic"}
        for hour in (1, 2)
    ]  # fmt: skip
    for alert in alerts:
        log.add(alert, webhook=None, mqtt="pending")
    log.close()
    return alerts


def monitor(classifier, broker, tmp_path, database) -> MonitorService:
    quiet = tmp_path / "quiet.wav"
    soundfile.write(quiet, np.zeros(16_000, dtype=np.float32), 16_000)  # gated: raises nothing new
    config = MonitorConfig.model_validate(
        {
            "streams": [{"name": "porch", "labels": "siren, rain", "source": str(quiet), "speed": 4.0}],
            "database": database,
            "mqtt": {"url": f"{broker.url}/home", "drain_s": 10.0},
        }
    )
    return MonitorService(classifier, config, emit=lambda _: None)


def states(database) -> list[str]:
    with sqlite3.connect(database) as db:
        return [row[0] for row in db.execute("SELECT mqtt FROM events ORDER BY id")]


def test_alerts_left_pending_are_sent_at_the_next_start_with_their_times(classifier, broker, tmp_path):
    database = tmp_path / "events.db"
    alerts = earlier_alerts(database)
    recorder = subscribed(broker, "home/porch/event")
    try:
        stats = monitor(classifier, broker, tmp_path, database).run()["porch"]
        deadline = time.monotonic() + HANG_GUARD_S
        while len(recorder.on("home/porch/event")) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        received = [message.json() for message in recorder.on("home/porch/event")[1:]]  # after the probe
    finally:
        recorder.close()
    assert stats.resent == 2 and stats.alerts == 0
    assert [event["time_utc"] for event in received] == [alert["time_utc"] for alert in alerts]
    assert all(event["resent"] and event["label"] == "siren" for event in received)
    assert states(database) == ["sent", "sent"]
    again = monitor(classifier, broker, tmp_path, database).run()["porch"]
    assert again.resent == 0, "a delivered alert is not sent twice"


def test_webhook_deliveries_left_pending_are_sent_again_too(classifier, tmp_path):
    import http.server
    import json
    import threading

    received: list[dict] = []

    class Receiver(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    database = tmp_path / "events.db"
    log = EventLog(database)
    alert = {"time_utc": "2026-12-01T03:00:00.000+00:00", "stream": "porch", "stream_time_s": 3.0, "start_s": 1.0,
             "end_s": 3.0, "label": "siren", "score": 0.8, "source": "mic"}  # fmt: skip
    log.add(alert, webhook="pending")
    log.close()
    quiet = tmp_path / "quiet.wav"
    soundfile.write(quiet, np.zeros(16_000, dtype=np.float32), 16_000)
    url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    config = MonitorConfig.model_validate(
        {
            "streams": [{"name": "porch", "labels": "siren, rain", "source": str(quiet), "webhook": url}],
            "database": database,
        }
    )
    try:
        stats = MonitorService(classifier, config, emit=lambda _: None).run()["porch"]
    finally:
        server.shutdown()
    assert stats.resent == 1 and [event["time_utc"] for event in received] == [alert["time_utc"]]
    with sqlite3.connect(database) as db:
        assert [row[0] for row in db.execute("SELECT webhook FROM events")] == ["sent"]
