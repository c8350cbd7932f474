"""The monitor's settings, checked before anything listens: the YAML config and its errors, broker URLs,
label ids for Home Assistant, label states, and the evidence ring and its retention."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

from soundsift.cli.main import main
from soundsift.monitor.config import EvidenceConfig, load_config, object_id, parse_broker_url, redact_url
from soundsift.monitor.evidence import AudioRing, EvidenceStore
from soundsift.monitor.gate import AlertGate, LabelStates

REPO = Path(__file__).resolve().parents[1]

GOOD = """
streams:
  - name: kitchen
    source: rtsp://user:secret@camera.local/stream1
    labels: [smoke alarm, glass breaking, speech]
    alert: [smoke alarm, glass breaking]
    thresholds: {smoke alarm: 0.3}
  - name: nursery
    source: mic
    labels: baby crying, speech
    confirm: 3/4
mqtt:
  url: mqtt://ha:pw@192.168.1.10/home/sound
evidence:
  dir: /tmp/clips
"""


def test_a_good_config_loads_with_its_defaults(tmp_path):
    path = tmp_path / "monitors.yaml"
    path.write_text(GOOD)
    config = load_config(path)
    kitchen, nursery = config.streams
    assert kitchen.threshold_of("smoke alarm") == 0.3 and kitchen.threshold_of("glass breaking") == 0.5
    assert nursery.alert_labels == ["baby crying", "speech"] and (nursery.confirm_n, nursery.confirm_m) == (3, 4)
    assert config.mqtt is not None and config.mqtt.endpoint().prefix == "home/sound"
    assert config.evidence is not None and config.evidence.before_s == 5.0


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (("confirm: 3/4", "confirm: 5/4"), "stream \"nursery\" (streams[1]): confirm: '5/4': need 1 <= N <= M"),
        (("thresholds: {smoke alarm: 0.3}", "threshold: 2"), 'stream "kitchen" (streams[0]): threshold: Input should'),
        (("alert: [smoke alarm, glass breaking]", "alert: [doorbell]"), "name labels not in labels: doorbell"),
        (("name: nursery", "name: kitchen"), "two streams are named 'kitchen'"),
        (("name: nursery", "name: nursery room"), "name: String should match pattern"),
        (("source: mic", "source: mic\n    colour: red"), "colour: Extra inputs are not permitted"),
        (("mqtt://ha:pw@192.168.1.10", "http://192.168.1.10"), "mqtt.url: expected mqtt:// or mqtts://"),
        (("labels: baby crying, speech", "labels: baby crying"), "labels: "),
        (("streams:", "streams: 3\nother:"), "streams: Input should be a valid list"),
        (("source: mic", "source: /no/such/recording.wav"), 'stream "nursery" (streams[1]): source: the file'),
        (("source: mic", "source: /tmp"), "'/tmp' is a folder, not an audio file"),
    ],
)
def test_config_errors_name_the_stream_and_field_without_a_traceback(tmp_path, capsys, edit, expected):
    path = tmp_path / "monitors.yaml"
    path.write_text(GOOD.replace(*edit))
    assert main(["monitor", "--config", str(path)]) == 2
    error = capsys.readouterr().err
    assert expected in error and "Traceback" not in error and str(path) in error


def test_unreadable_or_not_yaml_files_are_usage_errors(tmp_path, capsys):
    assert main(["monitor", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "cannot read the config" in capsys.readouterr().err
    (tmp_path / "bad.yaml").write_text("streams: [unclosed")
    assert main(["monitor", "--config", str(tmp_path / "bad.yaml")]) == 2
    assert "not valid YAML" in capsys.readouterr().err
    (tmp_path / "list.yaml").write_text("- just a list")
    assert main(["monitor", "--config", str(tmp_path / "list.yaml")]) == 2


def test_single_stream_flag_errors_name_the_flag(capsys):
    assert main(["monitor", "--labels", "dog, siren", "--mqtt", "mqtt://host:99999"]) == 2
    assert "--mqtt" in capsys.readouterr().err
    assert main(["monitor", "--labels", "dog, siren", "--mqtt-ca", "ca.pem"]) == 2
    assert main(["monitor", "--labels", "dog, siren", "--confirm", "4/2"]) == 2
    assert "--confirm" in capsys.readouterr().err
    assert main(["monitor"]) == 2


def test_broker_urls(monkeypatch):
    monkeypatch.delenv("SOUNDSIFT_MQTT_PASSWORD", raising=False)
    plain = parse_broker_url("mqtt://broker.local")
    assert (plain.host, plain.port, plain.tls, plain.username, plain.prefix) == (
        "broker.local",
        1883,
        False,
        None,
        "soundsift",
    )
    full = parse_broker_url("mqtts://ha:p%40ss@10.0.0.2:8884/home/sound/")
    assert (full.port, full.tls, full.username, full.password, full.prefix) == (8884, True, "ha", "p@ss", "home/sound")
    monkeypatch.setenv("SOUNDSIFT_MQTT_PASSWORD", "from-env")
    assert parse_broker_url("mqtt://ha@host").password == "from-env"
    for bad in ("http://host", "mqtt://", "mqtt://host:0x", "mqtt://host/a/+/b", "mqtt://host/a//b"):
        with pytest.raises(ValueError):
            parse_broker_url(bad)
    assert redact_url("rtsp://cam:secret@10.0.0.3/live") == "rtsp://cam:***@10.0.0.3/live"
    assert redact_url("mic") == "mic"


def test_label_ids_are_ascii_stable_and_distinct_in_any_language():
    labels = ["smoke alarm", "Smoke Alarm", "烟雾报警", "婴儿哭声", "Rauchmelder ausgelöst", "détecteur de fumée", "🔥"]
    ids = [object_id(label) for label in labels]
    assert len(set(ids)) == len(labels)
    assert all(label_id.isascii() and label_id.replace("_", "").isalnum() for label_id in ids)
    assert (
        ids[0].startswith("smoke_alarm_") and ids[2].startswith("label_") and ids[5].startswith("detecteur_de_fumee_")
    )
    assert object_id("烟雾报警") == ids[2]  # the same text gives the same id in every run


def test_label_state_turns_on_when_confirmed_and_off_after_the_hold():
    gate = AlertGate(["siren"], needed=2, window=3, cooldown_s=10)
    states = LabelStates(["siren"], hold_s=2.0)
    changes = []
    for second, heard in enumerate([True, False, True, True, False, False, False, False, False, False]):
        alerts = gate.update(float(second), {"siren": heard})
        changes.append((second, alerts, states.update(float(second), gate.confirmed)))
    assert changes[2] == (2, ["siren"], {"siren": True})  # 2 of the last 3
    assert gate.first_heard_s("siren") is None  # nothing heard in the last 3 hops now
    turned_off = [second for second, _, change in changes if change == {"siren": False}]
    assert turned_off == [7]  # last confirmed at 5 (hops 3, 4, 5 hold 2 heard), held 2 s


def test_the_audio_ring_keeps_the_last_seconds_by_absolute_index():
    ring = AudioRing(1.0, 10)
    ring.extend(np.arange(7, dtype=np.float32))
    ring.extend(np.arange(7, 15, dtype=np.float32))
    assert ring.total == 15
    assert list(ring.since(0)) == list(range(5, 15))  # only the last 10 samples are kept
    assert list(ring.since(12)) == [12, 13, 14]
    ring.extend(np.arange(15, 40, dtype=np.float32))  # a block longer than the ring
    assert list(ring.since(0)) == list(range(30, 40))


def test_evidence_retention_by_age_and_total_size(tmp_path):
    folder = tmp_path / "clips"
    (folder / "kitchen").mkdir(parents=True)
    old = folder / "kitchen" / "old.flac"
    old.write_bytes(b"x" * 1000)
    os.utime(old, (time.time() - 3 * 86_400,) * 2)
    unrelated = folder / "kitchen" / "notes.txt"
    unrelated.write_text("not a clip")
    store = EvidenceStore(EvidenceConfig(dir=folder, max_age_days=2, max_total_mb=0.15))
    assert not old.exists() and unrelated.exists() and store.deleted == 1
    samples = np.random.default_rng(0).uniform(-0.5, 0.5, 48_000).astype(np.float32)  # noise: ~0.09 MB as FLAC
    for index in range(3):
        store.write(folder / "kitchen" / f"clip{index}.flac", samples, 48_000)
    kept = sorted(path.name for path in folder.glob("*/*.flac"))
    assert kept == ["clip2.flac"] and store.written == 3  # oldest first, until the total fits


def test_the_documented_three_room_example_is_valid_and_flags_override_parts_of_it(tmp_path):
    example = REPO / "deploy" / "monitor" / "monitors.example.yaml"
    config = load_config(example, {"mqtt": {"url": "mqtt://mosquitto/house"}, "evidence": {"dir": str(tmp_path)}})
    assert [stream.name for stream in config.streams] == ["kitchen", "nursery", "hall"]
    assert config.mqtt is not None and config.mqtt.endpoint().prefix == "house" and config.mqtt.scores_interval_s == 5
    assert config.evidence is not None and config.evidence.dir == tmp_path and config.evidence.max_age_days == 14
    assert config.privacy.private_labels == ["Sprache"] and config.privacy.default_private_labels
    docs = (REPO / "docs" / "smart-home.md").read_text(encoding="utf-8")
    assert example.read_text(encoding="utf-8").split("streams:", 1)[1] in docs, "docs/smart-home.md shows the example"


def test_only_one_stream_reads_stdin(tmp_path, capsys):
    path = tmp_path / "monitors.yaml"
    path.write_text(
        GOOD.replace("source: mic", "source: '-'").replace("rtsp://user:secret@camera.local/stream1", "'-'")
    )
    assert main(["monitor", "--config", str(path)]) == 2
    assert "only one stream can read stdin" in capsys.readouterr().err


def test_an_evidence_folder_that_cannot_be_made_is_a_clear_error(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert main(["monitor", "--labels", "dog, siren", "--evidence-dir", str(blocker / "clips"), "--model", "x"]) == 2
    error = capsys.readouterr().err
    assert "cannot create the evidence folder" in error and "Traceback" not in error


def test_the_cli_guide_example_is_a_valid_config():
    import yaml

    from soundsift.monitor.config import MonitorConfig

    guide = (REPO / "docs" / "cli.md").read_text(encoding="utf-8")
    block = guide.split("# soundsift monitor --config monitors.yaml\n", 1)[1].split("```", 1)[0]
    assert [stream.name for stream in MonitorConfig.model_validate(yaml.safe_load(block)).streams] == [
        "kitchen",
        "nursery",
        "hall",
    ]


def test_a_missing_file_source_is_refused_at_start_not_retried(capsys):
    """A file that is not there is a mistake to say at once (exit 2), before the model loads; only
    network streams and devices are reconnected."""
    assert main(["monitor", "--labels", "siren, rain", "--source", "/no/such/kitchen.wav"]) == 2
    error = capsys.readouterr().err
    assert "'/no/such/kitchen.wav' does not exist" in error and "--source" in error and "Traceback" not in error
