"""Items 12 and 13: careless library and CLI use gets one clear line, never a traceback; settings are
validated whenever they are made or overridden."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from soundsift import Classifier, ModelSettings, ServerSettings
from soundsift.cli.main import main
from soundsift.errors import AudioDecodeError, ConfigurationError


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"batch_size": 0}, "batch_size"),
        ({"backend": "tensorflow"}, "backend"),
        ({"port": 7860}, "port: Extra inputs are not permitted"),
        ({"threshold": 2}, "threshold"),
        ({"device": "tpu"}, "device"),
        ({"max_decoded_mb": -1}, "max_decoded_mb"),
    ],
)
def test_bad_or_unknown_settings_are_refused_before_any_model_loads(tiny_model_dir, overrides, message):
    with pytest.raises(ConfigurationError, match=message):
        Classifier(model=str(tiny_model_dir), **overrides)
    with pytest.raises(ConfigurationError, match=message):
        ModelSettings(model=str(tiny_model_dir)).with_overrides(**overrides)


def test_overriding_a_classifiers_settings_validates_too(classifier):
    with pytest.raises(ConfigurationError, match="batch_size"):
        Classifier(classifier.settings, batch_size=0)
    with pytest.raises(ConfigurationError, match="api_key"):
        ServerSettings.build(api_key="short")
    assert ServerSettings(host="127.0.0.2").loopback_only and not ServerSettings(host="0.0.0.0").loopback_only


def test_a_bare_array_or_a_pair_of_paths_get_a_message_that_says_what_to_pass(classifier, esc50_clips):
    with pytest.raises(AudioDecodeError, match=r"pass \(samples, sample_rate\)"):
        classifier.classify(np.zeros(16_000, dtype=np.float32), "a, b")
    with pytest.raises(AudioDecodeError, match="pass a list"):
        classifier.classify((str(esc50_clips[0]), str(esc50_clips[1])), "a, b")
    # A pair of paths given where several inputs are expected is two inputs, not (samples, rate).
    assert classifier.embed_audio((str(esc50_clips[0]), str(esc50_clips[1]))).shape[0] == 2


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "soundsift", *args], capture_output=True, text=True, timeout=300)


def test_batch_out_in_a_missing_folder_is_created(tiny_model_dir, esc50_clips, tmp_path):
    out = tmp_path / "new" / "deeper" / "rows.jsonl"
    args = ["--labels", "dog, rain", "--model", str(tiny_model_dir), "--device", "cpu"]
    assert main(["batch", str(esc50_clips[0]), "--out", str(out), *args]) == 0
    assert len(out.read_text().splitlines()) == 1


@pytest.mark.slow  # the CLI in a subprocess
@pytest.mark.parametrize("where", ["file-as-folder", "folder-as-file"])
def test_batch_out_that_cannot_be_written_is_one_line(tiny_model_dir, esc50_clips, tmp_path, where):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    out = blocker / "rows.jsonl" if where == "file-as-folder" else tmp_path
    completed = run_cli(
        "batch", str(esc50_clips[0]), "--out", str(out), "--labels", "a, b", "--model", str(tiny_model_dir)
    )
    assert completed.returncode == 2
    assert "Traceback" not in completed.stderr
    error_lines = [line for line in completed.stderr.splitlines() if "error" in line]
    assert len(error_lines) == 1 and str(out) in error_lines[0]


def test_classify_a_folder_classifies_the_audio_in_it(tiny_model_dir, esc50_clips, tmp_path, capsys):
    folder = tmp_path / "clips"
    (folder / "sub").mkdir(parents=True)
    for index, clip in enumerate(esc50_clips[:3]):
        (folder / ("sub" if index else "") / clip.name).write_bytes(clip.read_bytes())
    (folder / "notes.txt").write_text("not audio")
    assert main(["classify", str(folder), "--labels", "dog, rain", "--model", str(tiny_model_dir), "--json"]) == 0
    import json

    results = json.loads(capsys.readouterr().out)
    assert sorted(result["source"].rsplit("/", 1)[-1] for result in results) == sorted(c.name for c in esc50_clips[:3])
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["classify", str(empty), "--labels", "dog, rain", "--model", str(tiny_model_dir)]) == 2
    assert "no audio files" in capsys.readouterr().err
