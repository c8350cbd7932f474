"""The silence gate (``min_dbfs``): windows quieter than it never reach the model, in detect, index
and the monitor; the windows it lets through score exactly as without it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile

from soundsift import Classifier, Library, detect
from soundsift.cli.main import main
from soundsift.core.audio import level_dbfs
from soundsift.core.pipeline import LocalEmbedder
from soundsift.errors import ConfigurationError
from soundsift.monitor.config import StreamConfig
from tests.data.audio import tone

RATE = 48_000
LABELS = "dog, rain, siren"


class CountingEmbedder(LocalEmbedder):
    """The real model, counting the clips it is asked to embed."""

    clips = 0

    def embed_audio(self, items):  # type: ignore[no-untyped-def]
        self.clips += len(items)
        return super().embed_audio(items)


def _recording() -> np.ndarray:
    """4 s of a tone at about -9 dBFS, 6 s of faint hiss at about -80 dBFS, 4 s of tone: 14 s."""
    loud = 0.5 * tone(4.0, RATE, frequency=440.0)[:, 0]
    hiss = np.random.default_rng(0).normal(0.0, 1e-4, 6 * RATE).astype(np.float32)
    return np.concatenate([loud, hiss, loud]).astype(np.float32)


def test_level_dbfs_is_the_rms_level():
    assert level_dbfs(np.ones(100, np.float32)) == pytest.approx(0.0)
    assert level_dbfs(np.full(100, 0.1, np.float32)) == pytest.approx(-20.0)
    assert level_dbfs(np.zeros(100, np.float32)) == -np.inf
    assert level_dbfs(np.zeros(0, np.float32)) == -np.inf


def test_detect_gates_quiet_windows_and_scores_the_rest_as_before(classifier: Classifier):
    recording = _recording()
    counting = CountingEmbedder(classifier.backend, batch_size=8)
    gated_classifier = Classifier(classifier.settings, loaded_backend=classifier.backend, embedder=counting)
    ungated = detect(classifier, (recording, RATE), LABELS, window_s=2.0, hop_s=1.0)
    gated = detect(gated_classifier, (recording, RATE), LABELS, window_s=2.0, hop_s=1.0, min_dbfs=-60.0)

    assert len(gated.windows) == len(ungated.windows) == 13
    quiet = [w for w in gated.windows if w.start_s >= 4.0 and w.end_s <= 10.0]
    assert [w.gated for w in gated.windows] == [w in quiet for w in gated.windows]
    assert gated.gated_windows == len(quiet) == 5
    assert counting.clips == len(gated.windows) - len(quiet)  # the gated windows never reached the model
    for with_gate, without in zip(gated.windows, ungated.windows, strict=True):
        if with_gate.gated:
            assert set(with_gate.scores.values()) == {0.0}
        else:
            assert with_gate.scores == pytest.approx(without.scores, abs=1e-6)
    assert ungated.gated_windows == 0


@pytest.mark.parametrize("level", [-121.0, 0.5, float("nan")])
def test_a_gate_outside_its_range_is_refused(classifier: Classifier, level: float):
    with pytest.raises(ConfigurationError, match="min_dbfs"):
        detect(classifier, (_recording(), RATE), LABELS, min_dbfs=level)


def test_index_stores_only_the_windows_above_the_gate(tmp_path: Path, classifier: Classifier):
    folder = tmp_path / "audio"
    folder.mkdir()
    soundfile.write(folder / "mixed.wav", _recording(), RATE)
    soundfile.write(folder / "quiet.wav", np.zeros(3 * RATE, np.float32), RATE)
    library = Library(tmp_path / "index", classifier=classifier, window_s=2.0, hop_s=1.0)
    report = library.add([folder], min_dbfs=-60.0)

    assert report.added == 2 and not report.failed  # a file the gate keeps whole is indexed, with no windows
    assert report.windows_gated == 5 + 2
    assert report.windows_added == 13 - 5
    hits = library.search(like=str(folder / "mixed.wav"), top=20).hits
    assert hits and all(hit.path.endswith("mixed.wav") for hit in hits)
    assert all(hit.end_s <= 5.0 or hit.start_s >= 9.0 for hit in hits)  # no stored window lies in the hiss


def test_cli_detect_and_index_take_min_dbfs(tmp_path: Path, tiny_model_dir: Path, capsys):
    path = tmp_path / "mixed.wav"
    soundfile.write(path, _recording(), RATE)
    out = tmp_path / "events.json"
    model = ["--model", str(tiny_model_dir)]
    code = main(["detect", str(path), "--labels", LABELS, "--window", "2", "--hop", "1", "--min-dbfs", "-60",
                 "--out", str(out), *model])  # fmt: skip
    assert code == 0
    assert "(5 gated as quiet)" in capsys.readouterr().out
    assert json.loads(out.read_text())["gated_windows"] == 5

    code = main(["index", str(path), "--index", str(tmp_path / "index"), "--window", "2", "--hop", "1",
                 "--min-dbfs", "-60", "--json", *model])  # fmt: skip
    assert code == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["windows_gated"] == 5 and report["windows_added"] == 8

    assert main(["detect", str(path), "--labels", LABELS, "--min-dbfs", "3", *model]) == 2
    assert "min_dbfs must be from -120 to 0" in capsys.readouterr().err


def test_the_monitor_reads_min_dbfs_and_its_old_name():
    base = {"name": "kitchen", "source": "mic", "labels": LABELS}
    assert StreamConfig.model_validate(base).min_dbfs == -50.0
    assert StreamConfig.model_validate({**base, "min_dbfs": -70}).min_dbfs == -70.0
    assert StreamConfig.model_validate({**base, "gate_db": -65}).min_dbfs == -65.0
