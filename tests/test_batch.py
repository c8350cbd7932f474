"""soundsift batch: discovery, error rows, output schemas, kill-and-resume, and the Ray engine."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from soundsift.cli.main import main
from soundsift.core.files import discover_inputs
from soundsift.i18n.presets import preset_labels

pytestmark = pytest.mark.slow  # CLI subprocesses and a Ray instance

LABELS = "dog, rain, siren, crying baby"


@pytest.fixture(scope="module")
def collection(tmp_path_factory, esc50_rows):
    """A tree of 24 real clips, a corrupt MP3, an empty WAV and a text file."""
    from tests.data.shared import ESC50, shared_path

    root = tmp_path_factory.mktemp("collection")
    (root / "garden" / "deep").mkdir(parents=True)
    for index, row in enumerate(esc50_rows[:24]):
        folder = root if index % 3 == 0 else root / "garden" if index % 3 == 1 else root / "garden" / "deep"
        shutil.copy(shared_path(ESC50) / "audio" / row["filename"], folder / row["filename"])
    (root / "garden" / "corrupt.mp3").write_bytes(b"\xff\xfb" + bytes(300))
    (root / "empty.wav").touch()
    (root / "notes.txt").write_text("not audio")
    return root


@pytest.fixture
def env(tiny_model_dir, monkeypatch):
    monkeypatch.setenv("SOUNDSIFT_MODEL", str(tiny_model_dir))
    monkeypatch.setenv("SOUNDSIFT_DEVICE", "cpu")
    return {**os.environ}


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_discovery_of_folders_globs_and_files(collection):
    found = discover_inputs([str(collection)])
    assert len(found) == 26 and not any(p.endswith("notes.txt") for p in found)
    assert str(collection / "garden" / "corrupt.mp3") in found
    globbed = discover_inputs([str(collection / "garden" / "**" / "*.wav")])
    assert len(globbed) == 16 and all("garden" in p for p in globbed)
    explicit = discover_inputs([str(collection / "notes.txt"), str(collection / "notes.txt")])
    assert explicit == [str(collection / "notes.txt")]


def test_jsonl_rows_errors_and_summary(collection, env, tmp_path, capsys, classifier):
    out = tmp_path / "results.jsonl"
    code = main(["batch", str(collection), "--labels", LABELS, "--out", str(out), "--batch-size", "4"])
    assert code == 1
    rows = read_jsonl(out)
    assert len(rows) == 26 and len({row["path"] for row in rows}) == 26
    errors = {Path(row["path"]).name: row["error"] for row in rows if row["error"]}
    assert set(errors) == {"corrupt.mp3", "empty.wav"}
    assert errors["empty.wav"].startswith("empty_audio")
    good = next(row for row in rows if not row["error"])
    expected = classifier.classify(good["path"], LABELS)
    assert good["top_label"] == expected.top_label
    assert good["scores"] == pytest.approx({s.label: s.score for s in expected.scores}, abs=1e-5)
    assert set(good) >= {"path", "top_label", "confidence", "uncertain", "margin", "duration_s", "scores", "error"}
    summary = capsys.readouterr().err
    assert "26 files" in summary and "24 classified, 2 failed" in summary and "model" in summary


def test_csv_schema_and_rerun_skips_done_files(collection, env, tmp_path, capsys):
    out = tmp_path / "results.csv"
    main(["batch", str(collection), "--labels", LABELS, "--out", str(out)])
    main(["batch", str(collection), "--labels", LABELS, "--out", str(out)])
    with open(out, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 26
    assert list(rows[0]) == [
        "path",
        "top_label",
        "confidence",
        "margin",
        "uncertain",
        "silent",
        "duration_s",
        "error",
        "score:dog",
        "score:rain",
        "score:siren",
        "score:crying baby",
    ]
    scored = [row for row in rows if not row["error"]]
    assert all(
        abs(sum(float(row[f"score:{label.strip()}"]) for label in LABELS.split(",")) - 1) < 1e-4 for row in scored
    )
    assert "26 already done" in capsys.readouterr().err


def test_other_labels_on_an_existing_output_are_refused(collection, env, tmp_path, capsys):
    out = tmp_path / "results.jsonl"
    main(["batch", str(collection / "garden" / "deep"), "--labels", LABELS, "--out", str(out)])
    assert main(["batch", str(collection), "--labels", "cat, cow", "--out", str(out)]) == 2
    assert "other labels" in capsys.readouterr().err


def test_partial_last_line_is_dropped_and_redone(collection, env, tmp_path):
    out = tmp_path / "results.jsonl"
    main(["batch", str(collection / "garden" / "deep"), "--labels", LABELS, "--out", str(out)])
    complete = out.read_text().splitlines(keepends=True)
    out.write_text("".join(complete[:-1]) + complete[-1][:25])
    main(["batch", str(collection / "garden" / "deep"), "--labels", LABELS, "--out", str(out)])
    rows = read_jsonl(out)
    assert sorted(row["path"] for row in rows) == sorted(json.loads(line)["path"] for line in complete)


def test_killed_run_resumes_with_every_file_exactly_once(collection, env, tmp_path):
    out = tmp_path / "results.jsonl"
    command = [
        sys.executable,
        "-m",
        "soundsift",
        "batch",
        str(collection),
        "--labels",
        LABELS,
        "--out",
        str(out),
        "--batch-size",
        "1",
        "--workers",
        "1",
    ]
    # Killed once five rows are out. A run that outpaces this process's polling and ends first
    # proves nothing, and is tried again (a loaded machine can pause this process at any moment).
    for _ in range(3):
        out.unlink(missing_ok=True)
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 120  # a hang guard
            while time.monotonic() < deadline and (not out.exists() or len(out.read_text().splitlines()) < 5):
                time.sleep(0.005)
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait()
        written_before = len(read_jsonl(out)) if out.exists() else 0
        if written_before < 26:
            break
    assert 5 <= written_before < 26, f"the run was not killed mid-way ({written_before} rows written)"
    subprocess.run(command, env=env, capture_output=True, timeout=300)
    paths = [row["path"] for row in read_jsonl(out)]
    assert sorted(paths) == sorted(discover_inputs([str(collection)]))


def test_parquet_output(collection, env, tmp_path):
    out = tmp_path / "results.parquet"
    main(["batch", str(collection / "garden"), "--labels", LABELS, "--out", str(out)])
    table = pq.read_table(out).to_pylist()
    assert len(table) == 17 and "score:siren" in table[0]
    assert (tmp_path / "results.parquet.progress.jsonl").exists()


def test_ray_engine_gives_the_same_rows_as_the_local_engine(collection, env, tmp_path):
    # The ray run names its labels by preset (that path once passed no labels to the actors).
    local, distributed = tmp_path / "local.jsonl", tmp_path / "ray.jsonl"
    inputs = [str(collection / "garden")]
    main(["batch", *inputs, "--labels", preset_labels("nature"), "--out", str(local)])
    code = subprocess.run(
        [
            sys.executable,
            "-m",
            "soundsift",
            "batch",
            *inputs,
            "--preset",
            "nature",
            "--out",
            str(distributed),
            "--engine",
            "ray",
            "--ray-actors",
            "1",
            "--batch-size",
            "4",
        ],
        env={**env, "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert code.returncode == 1, code.stderr[-3000:]
    by_path = {row["path"]: row for row in read_jsonl(local)}
    ray_rows = read_jsonl(distributed)
    assert sorted(row["path"] for row in ray_rows) == sorted(by_path)
    for row in ray_rows:
        expected = by_path[row["path"]]
        assert row["top_label"] == expected["top_label"]
        assert (row["error"] is None) == (expected["error"] is None)
        assert row["scores"] == pytest.approx(expected["scores"], abs=1e-5)
