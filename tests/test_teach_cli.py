"""`soundsift teach`, `--adapter` on classify / batch / detect, and `eval --shots`, through the real CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile

from tests.data.audio import write_soundfile
from tests.test_adapters import RATE, SOUNDS, synthetic, write_examples

pytestmark = pytest.mark.slow  # every command loads the model and embeds clips


@pytest.fixture(scope="module")
def taught(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("teach")
    return write_examples(folder / "examples", shots=3), folder / "sounds.adapter"


def test_teach_then_use_the_adapter_everywhere(run, taught, tmp_path):
    examples, adapter = taught
    code, out, err = run("teach", str(examples), "--out", str(adapter))
    assert code == 0, err
    assert "taught 3 labels, 9 clips" in out and "cross-validation" in out and adapter.is_file()
    for kind in SOUNDS:
        assert kind in out

    clip = write_soundfile(tmp_path / "new-clicks.wav", synthetic("clicks", 5), RATE)
    code, out, _ = run("classify", str(clip), "--adapter", str(adapter), "--labels", "glass breaking", "--json")
    assert code == 0
    (result,) = json.loads(out)
    assert result["top_label"] == "clicks" and result["adapter"] == "sounds"
    assert {score["label"] for score in result["scores"] if score["taught"]} == set(SOUNDS)

    code, _, err = run("batch", str(examples), "--adapter", str(adapter), "--out", str(tmp_path / "out.csv"))
    assert code == 0, err
    assert (tmp_path / "out.csv").read_text().count("\n") == 10

    long = np.concatenate([synthetic("hum", 4, seconds=3.0), synthetic("clicks", 4, seconds=3.0)])
    recording = write_soundfile(tmp_path / "long.wav", long, RATE)
    events = tmp_path / "events.json"
    code, _, err = run("detect", str(recording), "--adapter", str(adapter), "--window", "1", "--out", str(events))
    assert code == 0, err
    assert {"hum", "clicks"} <= set(json.loads(events.read_text())["labels"])


def test_reteaching_reuses_the_embeddings_in_the_existing_file(run, taught):
    examples, adapter = taught
    if not adapter.exists():
        assert run("teach", str(examples), "--out", str(adapter))[0] == 0
    code, out, _ = run("teach", str(examples), "--out", str(adapter))
    assert code == 0 and "kept their embeddings" in out


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "not a soundsift adapter"),
        (b"\x10\x00\x00\x00\x00\x00\x00\x00{}" + b" " * 14, "no soundsift adapter metadata"),
    ],
)
def test_a_bad_adapter_file_is_a_message_not_a_traceback(run, tmp_path, esc50_clips, content, message):
    bad = tmp_path / "bad.adapter"
    bad.write_bytes(content)
    code, _, err = run("classify", str(esc50_clips[0]), "--adapter", str(bad))
    assert code == 2 and message in err and "Traceback" not in err


def test_teach_refuses_what_it_cannot_learn_from(run, tmp_path):
    empty = tmp_path / "empty"
    (empty / "doorbell").mkdir(parents=True)
    code, _, err = run("teach", str(empty), "--out", str(tmp_path / "x.adapter"))
    assert code == 2 and "no audio clips for label(s) doorbell" in err
    code, _, err = run("teach", str(empty), "--out", str(tmp_path / "x.pt"))
    assert code == 2 and ".adapter" in err


def test_eval_reports_accuracy_by_shots(run, tmp_path):
    dataset = write_examples(tmp_path / "dataset", shots=6)
    out = tmp_path / "report"
    code, printed, err = run("eval", "folder", str(dataset), "--shots", "1,2", "--seeds", "2", "--out", str(out))
    assert code == 0, err
    results = json.loads((out / "results.json").read_text())
    assert set(results["shots"]) == {"0", "1", "2"}
    assert results["shots"]["2"]["runs"] == 2 and results["shots"]["2"]["mean"] > results["shots"]["0"]["mean"]
    assert "Few-shot" in (out / "report.md").read_text() and "| 2 |" in printed
    assert (out / "shots.png").is_file()
    assert soundfile.info(str(next(dataset.rglob("*.wav")))).samplerate == RATE
