"""Classifier.detect and soundsift detect end to end on recordings built from real clips."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile

from soundsift import detect
from soundsift.cli.main import main
from soundsift.core.audio import load_audio
from soundsift.core.pipeline import sliding_windows
from soundsift.errors import ConfigurationError

RATE = 48_000
LABELS = "dog, rain, siren"


@pytest.fixture(scope="module")
def recording(esc50_clips):
    """3 s silence, clip A (5 s), 4 s silence, clip B (5 s), 3 s silence: 20 s at 48 kHz."""
    a, b = (load_audio(path, RATE).samples for path in esc50_clips[:2])
    silence = lambda seconds: np.zeros(int(seconds * RATE), dtype=np.float32)  # noqa: E731
    return np.concatenate([silence(3), a, silence(4), b, silence(3)])


def test_sliding_windows_cover_everything_in_order():
    samples = np.arange(23, dtype=np.float32)
    blocks = [samples[i : i + 4] for i in range(0, 23, 4)]
    windows = list(sliding_windows(blocks, window=10, hop=5))
    assert [start for start, _ in windows] == [0, 5, 10, 15]
    for start, window in windows:
        np.testing.assert_array_equal(window, samples[start : start + 10])
    assert len(windows[-1][1]) == 8
    assert [s for s, _ in sliding_windows([samples[:7]], window=10, hop=5)] == [0]


def test_window_count_times_and_scores_equal_classify_on_each_window(classifier, recording):
    detection = detect(classifier, (recording, RATE), LABELS, window_s=5.0, hop_s=2.5)
    assert detection.duration_s == pytest.approx(20.0)
    assert [w.start_s for w in detection.windows] == [2.5 * i for i in range(7)]
    assert detection.windows[-1].end_s == pytest.approx(20.0)
    for window in detection.windows:
        audio = recording[int(window.start_s * RATE) : int(window.end_s * RATE)]
        alone = classifier.classify((audio, RATE), LABELS)
        for score in alone.scores:
            assert window.scores[score.label] == pytest.approx(score.score, abs=1e-5)


def test_resampled_input_gives_nearly_the_same_track(classifier, recording):
    at_48k = detect(classifier, (recording, RATE), LABELS)
    import soxr

    at_16k = detect(classifier, (soxr.resample(recording, RATE, 16_000), 16_000), LABELS)
    assert len(at_16k.windows) == len(at_48k.windows)
    for ours, theirs in zip(at_16k.windows, at_48k.windows):
        assert ours.start_s == theirs.start_s
        for label in ours.scores:
            assert ours.scores[label] == pytest.approx(theirs.scores[label], abs=0.02)


def test_events_follow_the_thresholds_and_skip_background(classifier, recording):
    everything = detect(classifier, (recording, RATE), LABELS, threshold=0.0, background="rain")
    assert {e.label for e in everything.events} == {"dog", "siren"}
    assert all(e.start_s == 0.0 and e.end_s == pytest.approx(20.0) for e in everything.events)
    assert "rain" in everything.labels and everything.background == ["rain"]
    nothing = detect(classifier, (recording, RATE), LABELS, threshold=1.0)  # a score of three labels stays below 1
    assert nothing.events == []
    extra = detect(classifier, (recording, RATE), "dog, siren", background=["silence"], threshold=0.0)
    assert extra.labels == ["dog", "siren", "silence"] and {e.label for e in extra.events} == {"dog", "siren"}


def test_progress_is_reported(classifier, recording):
    seen = []
    detect(classifier, (recording, RATE), LABELS, progress=lambda done, total: seen.append((done, total)))
    assert seen and seen[-1][0] == pytest.approx(20.0) and seen[-1][1] == pytest.approx(20.0)
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)


def test_bad_geometry(classifier, recording):
    with pytest.raises(ConfigurationError, match="hop_s"):
        detect(classifier, (recording, RATE), LABELS, window_s=2.0, hop_s=3.0)
    with pytest.raises(ConfigurationError, match="window_s"):
        detect(classifier, (recording, RATE), LABELS, window_s=0.01)


def test_cli_writes_events_labels_track_and_plot(tiny_model_dir, tmp_path, recording, monkeypatch, capsys):
    monkeypatch.setenv("SOUNDSIFT_MODEL", str(tiny_model_dir))
    monkeypatch.setenv("SOUNDSIFT_DEVICE", "cpu")
    path = tmp_path / "recording.flac"
    soundfile.write(path, recording, RATE)
    events_csv, events_json = tmp_path / "events.csv", tmp_path / "events.json"
    track, plot = tmp_path / "labels.txt", tmp_path / "timeline.png"
    argv = ["detect", str(path), "--labels", LABELS, "--threshold", "0", "--background", "rain"]
    assert main([*argv, "--out", str(events_csv), "--labels-track", str(track), "--plot", str(plot)]) == 0
    rows = list(csv.DictReader(events_csv.open()))
    assert {row["label"] for row in rows} == {"dog", "siren"} and set(rows[0]) == {
        "label",
        "start_s",
        "end_s",
        "peak_score",
        "mean_score",
    }
    lines = track.read_text().splitlines()
    assert len(lines) == 2 and all(len(line.split("\t")) == 3 for line in lines)
    start, end, label = lines[0].split("\t")
    assert float(start) == 0.0 and float(end) == pytest.approx(20.0) and label in ("dog", "siren")
    assert plot.stat().st_size > 5_000
    assert main([*argv, "--out", str(events_json)]) == 0
    data = json.loads(events_json.read_text())
    assert len(data["windows"]) == 7 and {e["label"] for e in data["events"]} == {"dog", "siren"}
    assert "dog" in capsys.readouterr().out


@pytest.mark.slow  # an hour of audio
def test_an_hour_long_file_in_bounded_memory(tiny_model_dir, tmp_path):
    path = tmp_path / "hour.wav"
    with soundfile.SoundFile(path, "w", samplerate=8_000, channels=1, subtype="PCM_16") as handle:
        noise = np.random.default_rng(0).standard_normal(8_000 * 60).astype(np.float32) * 0.05
        for _ in range(60):
            handle.write(noise)
    code = f"""
import resource, soundsift
c = soundsift.Classifier(model={str(tiny_model_dir)!r}, device="cpu", batch_size=8)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
d = soundsift.detect(c, {str(path)!r}, "rain, wind", window_s=10, hop_s=10)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(len(d.windows), d.duration_s, (after - before) / 1024)
"""
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-2000:]
    windows, duration, growth_mb = completed.stdout.split()
    assert int(windows) == 360 and float(duration) == pytest.approx(3600.0)
    # The whole hour at 48 kHz float32 alone would be 660 MB.
    assert float(growth_mb) < 150, f"peak memory grew by {growth_mb} MB"


def test_timeline_figures_are_not_kept_by_pyplot(classifier, recording):
    # The web page draws one timeline per request; pyplot's global registry kept every one of them.
    import matplotlib.pyplot as plt

    from soundsift.detection.outputs import TimelineText, plot_timeline

    detection = detect(classifier, (recording, RATE), LABELS, threshold=0.0)
    before = plt.get_fignums()
    figures = [plot_timeline(detection, text=TimelineText(time_axis="Zeit (s)")) for _ in range(3)]
    assert plt.get_fignums() == before
    assert figures[0].axes[0].get_xlabel() == "Zeit (s)"
    assert figures[0].axes[0].get_title().endswith(f"{len(detection.events)} events")
