"""soundsift monitor and a real MQTT broker: Home Assistant discovery, events, states, availability and
the last will, delivery across a broker restart, several streams from one config, a dropped stream,
evidence clips and the health port.

The tiny random CLAP's scores mean nothing, so events are made certain the way the other monitor tests
do: threshold 0 (every scored window counts as heard), with near-silent stretches below the volume gate
where nothing is heard, which is what turns a label's state OFF again.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import soundfile

from soundsift.cli.main import main
from soundsift.monitor.config import MonitorConfig, MqttConfig, object_id
from soundsift.monitor.mqtt import MqttSink, node_id
from soundsift.monitor.runner import MonitorService
from tests.data.audio import tone
from tests.monitor.broker import HANG_GUARD_S, Broker, Recorder, TlsFiles, retained

pytestmark = [pytest.mark.broker, pytest.mark.slow]  # a real mosquitto and monitor processes

RATE = 16_000
HA_KEYS = {
    "name",
    "unique_id",
    "state_topic",
    "payload_on",
    "payload_off",
    "device_class",
    "availability_topic",
    "device",
}


def sound(*parts: tuple[str, float], frequency: float = 440.0) -> np.ndarray:
    """("tone", seconds) and ("quiet", seconds) stretches, mono float32 at 16 kHz."""
    pieces = [
        tone(seconds, RATE, frequency=frequency)[:, 0] if kind == "tone" else np.full(int(seconds * RATE), 1e-5)
        for kind, seconds in parts
    ]
    return np.concatenate(pieces).astype(np.float32)


def wav(path: Path, samples: np.ndarray) -> Path:
    soundfile.write(path, samples, RATE)
    return path


@pytest.fixture
def broker(tmp_path):
    server = Broker(tmp_path / "broker")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def config(tmp_path: Path, broker: Broker | None, streams: list[dict], **shared) -> MonitorConfig:
    defaults = {
        "labels": "siren, 烟雾报警, rain",
        "alert": ["siren", "烟雾报警"],
        "window_s": 1.0,
        "hop_s": 0.5,
        "threshold": 0.0,
        "confirm": "1/1",
        "cooldown_s": 100.0,
        "hold_s": 0.5,
        "min_dbfs": -60.0,
        "speed": 4.0,
    }
    data: dict = {"streams": [{**defaults, **stream} for stream in streams], "database": tmp_path / "events.db"}
    if broker:
        # drain_s is a hang guard here: close() returns as soon as the broker has acknowledged everything.
        data["mqtt"] = {"url": f"{broker.url}/test", "scores_interval_s": 0.5, "drain_s": HANG_GUARD_S}
    return MonitorConfig.model_validate({**data, **shared})


def _until(condition, what: str) -> None:
    """Poll ``condition`` until it holds; the deadline is only a hang guard."""
    deadline = time.monotonic() + HANG_GUARD_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"never saw {what} in {HANG_GUARD_S:.0f} s")
        time.sleep(0.05)


def logged(database: Path) -> list[dict]:
    with sqlite3.connect(database) as db:
        db.row_factory = sqlite3.Row
        return [dict(row) for row in db.execute("SELECT * FROM events ORDER BY id")]


def test_discovery_events_states_and_availability(classifier, broker, tmp_path):
    source = wav(tmp_path / "kitchen.wav", sound(("quiet", 1.5), ("tone", 3), ("quiet", 3)))
    node = node_id("test", "kitchen")
    # A label this stream had in an earlier run: its discovery config must be removed.
    stale = Recorder(broker, "unused")
    published = stale.client.publish(
        f"homeassistant/binary_sensor/{node}/old_label_0badf00d/config",
        json.dumps({"name": "old label", "state_topic": "test/kitchen/old_label_0badf00d/state"}),
        qos=1,
        retain=True,
    )
    published.wait_for_publish(HANG_GUARD_S)
    assert published.is_published(), "the stale config never reached the broker"
    stale.close()
    recorder = Recorder(broker, ["test/#", "homeassistant/#"])
    service = MonitorService(classifier, config(tmp_path, broker, [{"name": "kitchen", "source": str(source)}]))
    stats = service.run()["kitchen"]
    assert stats.alerts == 2 and stats.mqtt_undelivered == 0

    ids = {label: object_id(label) for label in ("siren", "烟雾报警")}
    assert all(label_id.isascii() and label_id == object_id(label) for label, label_id in ids.items())
    configs = retained(broker, "homeassistant/#")
    assert f"homeassistant/binary_sensor/{node}/old_label_0badf00d/config" not in configs, "stale label not removed"
    for label, label_id in ids.items():
        body = json.loads(configs[f"homeassistant/binary_sensor/{node}/{label_id}/config"])
        assert body.keys() >= HA_KEYS and body["name"] == label and body["device_class"] == "sound"
        assert body["state_topic"] == f"test/kitchen/{label_id}/state"
        assert body["availability_topic"] == "test/kitchen/availability"
        assert {"identifiers", "name", "manufacturer", "model", "sw_version"} <= body["device"].keys()
        assert body["device"]["identifiers"] == [node]

    events = [message.json() for message in recorder.on("test/kitchen/event")]
    assert sorted(event["label"] for event in events) == ["siren", "烟雾报警"]
    rows = logged(tmp_path / "events.db")
    assert {row["id"] for row in rows} == {event["id"] for event in events}
    assert all(row["mqtt"] == "sent" and row["stream"] == "kitchen" for row in rows)
    for event in events:
        assert event["stream"] == "kitchen" and event["soundsift_version"]
        # heard in the first window that reaches into the tone (1.5 s): it starts one window (1 s) earlier
        assert 0.5 <= event["start_s"] <= event["end_s"] <= 3.0, event
        assert {"score", "time_utc", "evidence", "source"} <= event.keys()
    for label_id in ids.values():
        states = [message.payload.decode() for message in recorder.on(f"test/kitchen/{label_id}/state")]
        assert "ON" in states and states[states.index("ON") :][-1] == "OFF", states  # ON while heard, then OFF
        assert "OFF" in states[states.index("ON") :], "never turned OFF in the quiet stretch"
    availability = [message.payload.decode() for message in recorder.on("test/kitchen/availability")]
    assert "online" in availability and availability[-1] == "offline"
    scores = [message.json() for message in recorder.on("test/kitchen/scores")]
    assert scores and set(scores[0]["scores"]) == {"siren", "烟雾报警", "rain"}
    recorder.close()


def test_last_will_says_offline_when_the_monitor_is_killed(tiny_model_dir, broker, tmp_path):
    source = wav(tmp_path / "long.wav", sound(("tone", 120)))
    recorder = Recorder(broker, "test/hall/availability")
    env = {**os.environ, "SOUNDSIFT_MODEL": str(tiny_model_dir), "SOUNDSIFT_DEVICE": "cpu"}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH", "")])
    command = [sys.executable, "-m", "soundsift", "monitor", "--labels", "siren, rain", "--source", str(source)]
    command += ["--name", "hall", "--mqtt", f"{broker.url}/test", "--db", str(tmp_path / "events.db")]
    with open(tmp_path / "monitor.log", "wb") as log:  # a pipe that nobody reads could fill and block it
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=log)
    try:
        recorder.wait_for(
            lambda: [m.payload for m in recorder.on("test/hall/availability")][-1:] == [b"online"],
            what="online from the monitor process",
        )
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=HANG_GUARD_S)
        recorder.wait_for(
            lambda: [m.payload for m in recorder.on("test/hall/availability")][-1:] == [b"offline"],
            what="the last will",
        )
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        recorder.close()
    assert retained(broker, "test/hall/availability") == {"test/hall/availability": b"offline"}


def test_events_produced_while_the_broker_is_down_arrive_after_it_restarts(classifier, broker, tmp_path):
    source = wav(tmp_path / "busy.wav", sound(("tone", 14)))
    recorder = Recorder(broker, "test/porch/event", client_id="soundsift-test-recorder")
    recorder.wait_for(recorder.client.is_connected, what="the recorder connected")
    service = MonitorService(
        classifier,
        config(tmp_path, broker, [{"name": "porch", "source": str(source), "cooldown_s": 1.0, "speed": 2.0}]),
        emit=lambda _: None,
    )
    runner = threading.Thread(target=service.run)
    runner.start()
    try:
        recorder.wait_for(lambda: recorder.on("test/porch/event"), what="a first event")
        broker.stop()
        down_from = len(logged(tmp_path / "events.db"))
        # Events happen meanwhile (one per label and second of audio at speed 2): the broker stays
        # down until two of them are in the log, or the recording has ended.
        _until(
            lambda: len(logged(tmp_path / "events.db")) - down_from >= 2 or not runner.is_alive(),
            "two events logged while the broker was down",
        )
        produced_while_down = len(logged(tmp_path / "events.db")) - down_from
        broker.start()
        runner.join(timeout=HANG_GUARD_S)
        assert not runner.is_alive()
    finally:
        service.stop()
        runner.join(timeout=HANG_GUARD_S)
    rows = logged(tmp_path / "events.db")
    assert produced_while_down >= 2, "no events were produced while the broker was down"
    recorder.wait_for(lambda: len(recorder.on("test/porch/event")) >= len(rows), what="every logged event delivered")
    received = {message.json()["id"] for message in recorder.on("test/porch/event")}
    assert received == {row["id"] for row in rows}, "an event was lost across the broker restart"
    assert all(row["mqtt"] == "sent" for row in rows)
    recorder.close()


def test_two_streams_from_one_config_file(tiny_model_dir, broker, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SOUNDSIFT_MODEL", str(tiny_model_dir))
    monkeypatch.setenv("SOUNDSIFT_DEVICE", "cpu")
    kitchen = wav(tmp_path / "kitchen.wav", sound(("tone", 3)))
    nursery = wav(tmp_path / "nursery.wav", sound(("quiet", 1), ("tone", 3), frequency=880.0))
    common = "    window_s: 1\n    hop_s: 0.5\n    threshold: 0\n    confirm: 1/1\n    cooldown_s: 100\n    speed: 4\n"
    (tmp_path / "monitors.yaml").write_text(
        "streams:\n"
        f"  - name: kitchen\n    source: {kitchen}\n    labels: [smoke alarm, glass breaking, speech]\n"
        f"    alert: [smoke alarm, glass breaking]\n{common}"
        f"  - name: nursery\n    source: {nursery}\n    labels: baby crying, speech\n    alert: [baby crying]\n{common}"
        f"database: {tmp_path / 'events.db'}\n",
        encoding="utf-8",
    )
    recorder = Recorder(broker, "rooms/+/event")
    assert main(["monitor", "--config", str(tmp_path / "monitors.yaml"), "--mqtt", f"{broker.url}/rooms"]) == 0
    assert "kitchen:" in capsys.readouterr().err
    recorder.wait_for(lambda: len(recorder.messages) >= 3, what="three events")
    by_stream = {
        stream: sorted(m.json()["label"] for m in recorder.on(f"rooms/{stream}/event"))
        for stream in ("kitchen", "nursery")
    }
    assert by_stream == {"kitchen": ["glass breaking", "smoke alarm"], "nursery": ["baby crying"]}
    assert {row["stream"]: row["source"] for row in logged(tmp_path / "events.db")} == {
        "kitchen": str(kitchen),
        "nursery": str(nursery),
    }
    recorder.close()


def test_a_stream_that_ends_is_reopened_and_reported(classifier, broker, tmp_path):
    clip = wav(tmp_path / "clip.wav", sound(("tone", 2)))

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(tmp_path)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    recorder = Recorder(broker, "test/garage/availability")
    url = f"http://127.0.0.1:{server.server_address[1]}/{clip.name}"
    stream = {"name": "garage", "source": url, "max_seconds": 5.0, "reconnect_max_s": 1.0}
    try:
        stats = MonitorService(classifier, config(tmp_path, broker, [stream]), emit=lambda _: None).run()["garage"]
    finally:
        server.shutdown()
        server.server_close()
    assert stats.reconnects >= 2 and stats.audio_s >= 5.0
    recorder.wait_for(
        lambda: [m.payload for m in recorder.on("test/garage/availability")].count(b"online") >= 3,
        what="online again after each drop",
    )
    sequence = [m.payload.decode() for m in recorder.on("test/garage/availability")]
    assert "online" in sequence[sequence.index("offline") :], sequence  # offline while down, then online again


def test_evidence_clips_hold_the_event_and_the_seconds_around_it(classifier, tmp_path):
    source = wav(tmp_path / "room.wav", sound(("quiet", 3), ("tone", 3), ("quiet", 3)))
    evidence = {"dir": tmp_path / "clips", "before_s": 1.5, "after_s": 1.0}
    cfg = config(tmp_path, None, [{"name": "study", "source": str(source), "speed": 8.0}], evidence=evidence)
    service = MonitorService(classifier, cfg, emit=lambda _: None)
    assert service.run()["study"].alerts == 2
    rows = logged(tmp_path / "events.db")
    for row in rows:
        path = Path(row["evidence"])
        assert path.is_file() and path.suffix == ".flac" and path.parent == tmp_path / "clips" / "study"
        info = soundfile.info(path)
        expected = (row["end_s"] - row["start_s"]) + 1.5 + 1.0
        assert info.duration == pytest.approx(expected, abs=0.11), (info.duration, row)  # one 0.1 s block
        samples, rate = soundfile.read(path)
        start = round(1.5 * rate)
        assert np.abs(samples[:start]).max() < 0.01, "the clip's lead-in should be the quiet before the tone"
        assert np.abs(samples[start:]).max() > 0.1, "the event's own audio is missing"


def test_health_port_reports_each_stream(classifier, tmp_path):
    # Far longer than the test needs: it stops the stream itself once the health port has said what
    # is checked, so a slow start cannot let the recording end first.
    source = wav(tmp_path / "office.wav", sound(("tone", 120)))
    cfg = config(tmp_path, None, [{"name": "office", "source": str(source), "speed": 2.0}], health_port=0)
    service = MonitorService(classifier, cfg, emit=lambda _: None)
    assert service.health_server is not None
    runner = threading.Thread(target=service.run)
    runner.start()
    try:
        body: dict = {}

        def health() -> dict:
            nonlocal body
            url = f"http://127.0.0.1:{service.health_server.port}/health"
            with urllib.request.urlopen(url, timeout=HANG_GUARD_S) as answer:
                body = json.loads(answer.read())
            return body

        _until(
            lambda: health()["streams"]["office"]["state"] == "listening" and body["streams"]["office"]["scored"],
            "the stream listening and scored on the health port",
        )
        assert body["ok"] is True and body["streams"]["office"]["state"] == "listening", body
        assert body["streams"]["office"]["source"] == str(source) and body["scorer"]["windows"] >= 1
    finally:
        service.stop()
        runner.join(timeout=HANG_GUARD_S)
    assert not runner.is_alive(), "stop() did not end the service"


def test_mqtts_with_a_ca_and_a_client_certificate(classifier, tmp_path):
    tls = TlsFiles.make(tmp_path / "tls")
    broker = Broker(tmp_path / "tls-broker", tls=tls)
    broker.start()
    try:
        recorder = Recorder(broker, "secure/attic/event")
        recorder.wait_for(recorder.client.is_connected, what="the TLS recorder connected")
        source = wav(tmp_path / "attic.wav", sound(("tone", 2)))
        mqtt = {"url": f"{broker.url}/secure", "ca_certs": tls.ca, "certfile": tls.client_cert}
        mqtt["keyfile"] = tls.client_key
        cfg = config(tmp_path, None, [{"name": "attic", "source": str(source)}], mqtt=mqtt)
        assert MonitorService(classifier, cfg, emit=lambda _: None).run()["attic"].alerts == 2
        recorder.wait_for(lambda: len(recorder.on("secure/attic/event")) == 2, what="two events over TLS")
        recorder.close()
    finally:
        broker.stop()


def test_configs_are_sent_again_when_home_assistant_restarts(broker):
    sink = MqttSink(MqttConfig(url=f"{broker.url}/test", drain_s=2.0), "den", ["doorbell"], model="tiny")
    recorder = Recorder(broker, "homeassistant/binary_sensor/#")
    try:
        assert sink.connected.wait(HANG_GUARD_S), "the sink did not connect"
        recorder.wait_for(lambda: recorder.messages, what="the discovery config")
        seen = len(recorder.messages)
        recorder.client.publish("homeassistant/status", "online", qos=1)  # Home Assistant's birth message
        recorder.wait_for(lambda: len(recorder.messages) > seen, what="the config sent again")
        assert json.loads(recorder.messages[-1].payload)["name"] == "doorbell"
    finally:
        sink.close()
        recorder.close()
