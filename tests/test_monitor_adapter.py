"""Taught labels in the monitor: a stream with an adapter (`soundsift teach`) raises events for its
taught labels beside zero-shot ones, and an adapter that cannot be used is a clear error."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from soundsift import Adapter
from soundsift.cli.main import main
from soundsift.errors import ConfigurationError
from soundsift.monitor.config import MonitorConfig
from soundsift.monitor.runner import MonitorService
from tests.data.audio import tone, write_soundfile

RATE = 48_000


@pytest.fixture(scope="module")
def adapter_file(classifier, tmp_path_factory):
    folder = tmp_path_factory.mktemp("examples")
    rng = np.random.default_rng(0)
    for variant in range(3):
        write_soundfile(folder / "hum" / f"{variant}.wav", tone(1.5, RATE, frequency=90.0 + 4 * variant), RATE)
        hiss = (0.2 * np.diff(rng.standard_normal(int(1.5 * RATE)), prepend=0.0)).astype(np.float32)
        write_soundfile(folder / "hiss" / f"{variant}.wav", hiss, RATE)
    path = folder / "workshop.adapter"
    Adapter.fit(classifier, folder).save(path)
    return path


def stream(source, **values):
    base = {"name": "workshop", "source": str(source), "window_s": 1.0, "hop_s": 0.5, "threshold": 0.0}
    return {**base, "confirm": "1/1", "cooldown_s": 100.0, "min_dbfs": -60.0, "speed": 8.0, **values}


def test_a_stream_with_an_adapter_alerts_on_its_taught_labels(classifier, adapter_file, tmp_path):
    source = write_soundfile(tmp_path / "workshop.wav", tone(2.0, 16_000, frequency=90.0), 16_000)
    config = MonitorConfig.model_validate(
        {"streams": [stream(source, adapter=adapter_file, labels="speech")], "database": tmp_path / "events.db"}
    )
    service = MonitorService(classifier, config, emit=lambda _: None)
    assert set(service.streams[0].alert) == {"hiss", "hum", "speech"}  # taught first, then zero-shot
    service.run()
    with sqlite3.connect(tmp_path / "events.db") as db:
        labels = {row[0] for row in db.execute("SELECT label FROM events")}
    assert labels == {"hum", "hiss", "speech"}


def test_alert_labels_are_checked_against_the_taught_ones(classifier, adapter_file, tmp_path):
    source = write_soundfile(tmp_path / "workshop.wav", tone(1.0, 16_000), 16_000)
    config = MonitorConfig.model_validate(
        {"streams": [stream(source, adapter=adapter_file, alert=["drill"])], "database": tmp_path / "events.db"}
    )
    with pytest.raises(ConfigurationError, match="stream workshop: alert or thresholds name labels.*drill"):
        MonitorService(classifier, config)


def test_a_damaged_adapter_is_a_usage_error(tiny_model_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SOUNDSIFT_MODEL", str(tiny_model_dir))
    monkeypatch.setenv("SOUNDSIFT_DEVICE", "cpu")
    damaged = tmp_path / "damaged.adapter"
    damaged.write_bytes(b"not an adapter")
    assert main(["monitor", "--adapter", str(damaged), "--source", "mic", "--db", str(tmp_path / "e.db")]) == 2
    error = capsys.readouterr().err
    assert "damaged.adapter" in error and "Traceback" not in error


def test_the_models_adapter_serves_every_stream_of_a_config(tiny_model_dir, adapter_file, tmp_path, monkeypatch):
    monkeypatch.setenv("SOUNDSIFT_MODEL", str(tiny_model_dir))
    monkeypatch.setenv("SOUNDSIFT_DEVICE", "cpu")
    source = write_soundfile(tmp_path / "shed.wav", tone(2.0, 16_000, frequency=90.0), 16_000)
    (tmp_path / "monitors.yaml").write_text(
        f"streams:\n  - name: shed\n    source: {source}\n    labels: speech\n    alert: [hum]\n"
        "    threshold: 0\n    confirm: 1/1\n    window_s: 1\n    hop_s: 0.5\n    speed: 8\n"
    )
    database = tmp_path / "events.db"
    command = ["monitor", "--config", str(tmp_path / "monitors.yaml"), "--adapter", str(adapter_file)]
    assert main([*command, "--db", str(database)]) == 0
    with sqlite3.connect(database) as db:
        assert [row[0] for row in db.execute("SELECT label FROM events")] == ["hum"]
