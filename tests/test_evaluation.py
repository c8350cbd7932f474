"""soundsift eval: the harness end to end, checked against the predictions it writes."""

from __future__ import annotations

import csv
import json
import shutil
from collections import defaultdict
from pathlib import Path

import pytest

from soundsift.cli.main import main
from tests.data.shared import ESC50, shared_path

pytestmark = pytest.mark.slow  # whole datasets through the model


@pytest.fixture
def env(tiny_model_dir, monkeypatch):
    monkeypatch.setenv("SOUNDSIFT_MODEL", str(tiny_model_dir))
    monkeypatch.setenv("SOUNDSIFT_DEVICE", "cpu")


def read_predictions(folder: Path) -> list[dict[str, str]]:
    with open(folder / "predictions.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_esc50_fold1_end_to_end_matches_its_own_predictions(env, tmp_path, classifier, esc50_rows, capsys):
    out = tmp_path / "esc50"
    assert main(["eval", "esc50", "--data", str(shared_path(ESC50)), "--out", str(out), "--batch-size", "16"]) == 0
    results = json.loads((out / "results.json").read_text())
    rows = read_predictions(out)
    assert len(rows) == 400 == results["clips"] and results["failed"] == 0
    assert len(results["classes"]) == 50 and "crying baby" in results["classes"]
    assert results["classes"][0] == "dog"

    top1 = sum(row["predicted"] == row["label"] for row in rows) / len(rows)
    top5 = sum(row["label"] in row["top5"].split("|") for row in rows) / len(rows)
    assert results["top1"] == pytest.approx(top1) and results["top5"] == pytest.approx(top5)
    assert results["folds"]["1"]["top1"] == pytest.approx(top1)
    per_class: dict[str, list[bool]] = defaultdict(list)
    for row in rows:
        per_class[row["label"]].append(row["predicted"] == row["label"])
    for name, hits in per_class.items():
        assert results["per_class"][name] == pytest.approx(sum(hits) / len(hits))
    assert sum(map(sum, results["confusion"])) == 400
    assert sum(results["confusion"][i][i] for i in range(50)) == sum(row["predicted"] == row["label"] for row in rows)

    sample = rows[123]
    direct = classifier.classify(sample["path"], results["classes"], templates=["This is a sound of {}."])
    assert sample["predicted"] == direct.top_label
    assert sample["top5"].split("|") == [s.label for s in direct.scores[:5]]

    assert results["latency_ms"]["model_p95"] >= results["latency_ms"]["model_p50"] > 0
    assert results["clips_per_s"] > 0 and results["peak_rss_gb"] > 0
    assert {"torch", "transformers", "soundsift"} <= set(results["versions"])
    assert (out / "confusion.png").stat().st_size > 1000
    report = (out / "report.md").read_text()
    assert "| method | top-1 acc. (%)" in report and f"{100 * top1:.2f}" in report
    assert f"{100 * top1:.2f}" in capsys.readouterr().out


@pytest.fixture
def class_tree(tmp_path, esc50_rows):
    root = tmp_path / "tree"
    for row in esc50_rows[:40]:
        if row["category"] in ("dog", "rain", "crow", "clock_tick"):
            folder = root / row["category"].replace("_", " ")
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copy(shared_path(ESC50) / "audio" / row["filename"], folder / row["filename"])
    return root


def test_folder_mode(env, tmp_path, class_tree):
    out = tmp_path / "out"
    assert main(["eval", "folder", str(class_tree), "--out", str(out), "--template", "the sound of {}"]) == 0
    results = json.loads((out / "results.json").read_text())
    rows = read_predictions(out)
    assert sorted(results["classes"]) == sorted(p.name for p in class_tree.iterdir())
    assert results["templates"] == ["the sound of {}"]
    assert results["clips"] == len(list(class_tree.rglob("*.wav"))) == len(rows)
    assert results["top1"] == pytest.approx(sum(r["predicted"] == r["label"] for r in rows) / len(rows))


def test_two_models_side_by_side_in_one_report(env, tmp_path, class_tree, tiny_model_dir, capsys):
    from tests.data.tiny_clap import build_tiny_clap

    base = build_tiny_clap(tmp_path / "tiny-base", shape="base", fusion=False, seed=3)
    out = tmp_path / "out"
    argv = ["eval", "folder", str(class_tree), "--out", str(out), "--model", str(tiny_model_dir), "--model", str(base)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    folders = sorted(path for path in out.iterdir() if path.is_dir())
    assert [path.name.split("-")[0] for path in folders] == ["1", "2"]
    reports = [json.loads((folder / "results.json").read_text()) for folder in folders]
    assert [report["model"] for report in reports] == [str(tiny_model_dir), str(base)]
    for folder, report in zip(folders, reports, strict=True):  # each model's own report, checked against its rows
        rows = read_predictions(folder)
        assert report["top1"] == pytest.approx(sum(r["predicted"] == r["label"] for r in rows) / len(rows))
    comparison = (out / "comparison.md").read_text()
    assert comparison == printed
    for report in reports:
        assert f"| {report['model']} | {100 * report['top1']:.2f} |" in comparison
    for name in reports[0]["classes"]:
        cells = " | ".join(f"{100 * report['per_class'][name]:.1f}" for report in reports)
        assert f"| {name} | {cells} |" in comparison
    assert main(["eval", "folder", str(class_tree), "--out", str(out), "--model", "a", "--model", "b",
                 "--shots", "1"]) == 2  # fmt: skip


def test_an_ensemble_beside_a_member_in_one_report(env, tmp_path, class_tree, tiny_model_dir, tiny_unfused_model_dir):
    from soundsift import Classifier, Ensemble

    out = tmp_path / "out"
    first, second = str(tiny_model_dir), str(tiny_unfused_model_dir)
    argv = ["eval", "folder", str(class_tree), "--out", str(out), "--model", f"{first}+{second}"]
    assert main([*argv, "--model", first]) == 0
    folders = sorted(path for path in out.iterdir() if path.is_dir())
    reports = [json.loads((folder / "results.json").read_text()) for folder in folders]
    assert [report["model"] for report in reports] == [f"{first}+{second}", first]
    assert f"| {first}+{second} |" in (out / "comparison.md").read_text()
    ensemble = Ensemble([Classifier(model=first, device="cpu"), Classifier(model=second, device="cpu")])
    rows = read_predictions(folders[0])
    classes = reports[0]["classes"]
    agreeing = sum(ensemble.classify(row["path"], classes).top_label == row["predicted"] for row in rows)
    assert agreeing >= len(rows) - 1  # the report's predictions are the ensemble's (one float tie allowed)
    assert main([*argv, "--shots", "1"]) == 2


def test_csv_mode_with_folds_and_a_broken_file(env, tmp_path, class_tree):
    table = tmp_path / "labels.csv"
    files = sorted(class_tree.rglob("*.wav"))
    (tmp_path / "broken.wav").write_bytes(b"nope")
    with open(table, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "fold"])
        for index, path in enumerate(files):
            writer.writerow([path.relative_to(tmp_path), path.parent.name, "A" if index % 2 else "B"])
        writer.writerow(["broken.wav", "dog", "A"])
    out = tmp_path / "out"
    assert main(["eval", "csv", str(table), "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["failed"] == 1 and set(results["folds"]) == {"A", "B"}
    rows = [r for r in read_predictions(out) if not r["error"]]
    for fold in ("A", "B"):
        fold_rows = [r for r in rows if r["fold"] == fold]
        assert results["folds"][fold]["top1"] == pytest.approx(
            sum(r["predicted"] == r["label"] for r in fold_rows) / len(fold_rows)
        )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["esc50", "--data", "/nonexistent"], "is not an ESC-50 folder"),
        (["esc50", "--data", "{esc50}", "--folds", "3"], "no clips"),
        (["folder", "/nonexistent"], "is not a folder"),
        (["csv", "/nonexistent.csv"], "does not exist"),
    ],
)
def test_bad_datasets_exit_2(env, tmp_path, capsys, argv, message):
    if "{esc50}" in argv:
        argv = [str(shared_path(ESC50)) if arg == "{esc50}" else arg for arg in argv]
    assert main(["eval", *argv, "--out", str(tmp_path / "o")]) == 2
    assert message in capsys.readouterr().err
