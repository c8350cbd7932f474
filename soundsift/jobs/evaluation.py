"""Evaluation harness: accuracy, latency and memory of a model + label set on labelled audio.

Datasets: the official ESC-50 layout (meta/esc50.csv + audio/), any DIR/<class name>/*.wav tree, or
a CSV of path,label[,fold]. For ESC-50 the protocol follows LAION-CLAP's zero-shot evaluation: the
50 category names with underscores turned into spaces, one prompt template ("This is a sound of
{}." by default), argmax over cosine similarity to the class text embeddings.
"""

from __future__ import annotations

import csv
import json
import multiprocessing
import platform
import re
import resource
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from soundsift._version import __version__
from soundsift.core.classifier import Classifier
from soundsift.core.ensemble import Ensemble, load_classifier
from soundsift.core.files import audio_files
from soundsift.core.pipeline import ScoredInput
from soundsift.core.results import Classification
from soundsift.core.scoring import PreparedLabels
from soundsift.core.settings import ModelSettings
from soundsift.errors import EXIT_USAGE, SoundsiftError
from soundsift.optional import MATPLOTLIB, ONNXRUNTIME, TORCH, TRANSFORMERS


class DatasetError(SoundsiftError):
    """The dataset folder or file does not have the expected layout."""

    code = "invalid_dataset"
    exit_code = EXIT_USAGE


@dataclass(frozen=True)
class EvalItem:
    path: str
    label: str
    fold: str = "all"


@dataclass
class Prediction:
    path: str
    fold: str
    label: str
    predicted: str | None
    top5: list[str]
    decode_ms: float
    model_ms: float
    error: str | None = None

    @property
    def correct(self) -> bool:
        return self.predicted == self.label

    @property
    def top5_correct(self) -> bool:
        return self.label in self.top5


@dataclass
class EvalReport:
    dataset: str
    model: str
    device: str
    templates: list[str]
    classes: list[str]
    clips: int
    failed: int
    top1: float
    top5: float
    folds: dict[str, dict[str, float]]
    top1_fold_mean: float
    top1_fold_std: float
    per_class: dict[str, float]
    latency_ms: dict[str, float]
    clips_per_s: float
    peak_rss_gb: float
    peak_gpu_gb: float | None
    versions: dict[str, str]
    confusion: list[list[int]] = field(repr=False)
    shots: dict[str, dict[str, Any]] = field(default_factory=dict)
    """``eval --shots``: accuracy by number of examples per class ("0" is zero-shot); see jobs.few_shot."""
    adapter: str | None = None


def esc50_items(data_dir: Path, folds: Sequence[int] | None = None) -> list[EvalItem]:
    meta = data_dir / "meta" / "esc50.csv"
    if not meta.is_file():
        raise DatasetError(f"{data_dir} is not an ESC-50 folder: {meta} is missing")
    with open(meta, newline="") as handle:
        rows = list(csv.DictReader(handle))
    wanted = {str(fold) for fold in folds} if folds else None
    items = [
        EvalItem(str(data_dir / "audio" / row["filename"]), row["category"].replace("_", " "), row["fold"])
        for row in sorted(rows, key=lambda r: (int(r["fold"]), r["filename"]))
        if wanted is None or row["fold"] in wanted
    ]
    if not items:
        raise DatasetError(f"no clips in {meta} for folds {sorted(wanted or [])}")
    return items


def esc50_class_order(data_dir: Path) -> list[str]:
    """Class names in ESC-50 target order (0..49)."""
    with open(data_dir / "meta" / "esc50.csv", newline="") as handle:
        targets = {int(row["target"]): row["category"].replace("_", " ") for row in csv.DictReader(handle)}
    return [targets[index] for index in sorted(targets)]


def folder_items(root: Path) -> list[EvalItem]:
    if not root.is_dir():
        raise DatasetError(f"{root} is not a folder")
    items = [
        EvalItem(path, folder.name)
        for folder in sorted(p for p in root.iterdir() if p.is_dir())
        for path in audio_files(folder)
    ]
    if not items:
        raise DatasetError(f"no audio files in class folders under {root} (expected DIR/<class name>/*.wav)")
    return items


def csv_items(table: Path) -> list[EvalItem]:
    if not table.is_file():
        raise DatasetError(f"{table} does not exist")
    with open(table, newline="") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or not {"path", "label"} <= set(reader.fieldnames):
            raise DatasetError(f"{table} needs a header with 'path' and 'label' columns (optional 'fold')")
        items = [
            EvalItem(str((table.parent / row["path"]).resolve()), row["label"].strip(), row.get("fold") or "all")
            for row in reader
        ]
    if not items:
        raise DatasetError(f"{table} has no rows")
    return items


def evaluate(
    classifier: Classifier | Ensemble,
    items: Sequence[EvalItem],
    *,
    dataset: str,
    classes: Sequence[str] | None = None,
    templates: Sequence[str] | None = None,
    progress: Any = None,
) -> tuple[EvalReport, list[Prediction]]:
    classes = list(classes or sorted({item.label for item in items}))
    paths = (item.path for item in items)
    started = time.perf_counter()
    if isinstance(classifier, Ensemble):  # zero-shot only: an ensemble takes no adapter
        ensemble_labels = classifier.prepare_labels(classes, templates=templates)
        used_templates = ensemble_labels.members[0].templates
        stream = classifier.iter_results(paths, ensemble_labels)
    else:
        prepared = _dataset_labels(classifier, classes, templates)
        used_templates = prepared.templates
        stream = classifier.iter_results(paths, prepared)
    predictions = []
    for scored in stream:
        predictions.append(_prediction(items[scored.index], scored))
        if progress is not None:
            progress.update(1)
    wall = time.perf_counter() - started
    return _report(classifier, dataset, classes, used_templates, predictions, wall), predictions


def _dataset_labels(classifier: Classifier, classes: list[str], templates: Sequence[str] | None) -> PreparedLabels:
    """The classes as labels; with an adapter its taught labels stand for the classes of the same
    name, the rest stay zero-shot."""
    taught = set(classifier.adapter.labels) if classifier.adapter else set()
    prepared = classifier.prepare_labels([name for name in classes if name not in taught] or None, templates=templates)
    unknown = set(prepared.names) - set(classes)
    if unknown:
        raise DatasetError(
            f"the adapter teaches labels that are not classes of the dataset: {', '.join(sorted(unknown))}"
        )
    return prepared


def evaluate_in_child(
    settings: ModelSettings,
    items: Sequence[EvalItem],
    *,
    dataset: str,
    classes: Sequence[str] | None = None,
    templates: Sequence[str] | None = None,
) -> tuple[EvalReport, list[Prediction]]:
    """`evaluate` with the model of ``settings``, in a process of its own: comparing models one
    after another in one process would report the largest model's memory for every later one."""
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no torch threads inherited
    with ProcessPoolExecutor(1, mp_context=context) as pool:
        return pool.submit(_evaluate_settings, settings, list(items), dataset, classes, templates).result()


def _evaluate_settings(
    settings: ModelSettings,
    items: list[EvalItem],
    dataset: str,
    classes: Sequence[str] | None,
    templates: Sequence[str] | None,
) -> tuple[EvalReport, list[Prediction]]:
    return evaluate(load_classifier(settings), items, dataset=dataset, classes=classes, templates=templates)


def folder_name(index: int, model: str) -> str:
    """A report folder for the index-th model: its number, then its name as a safe file name."""
    return f"{index}-" + re.sub(r"[^A-Za-z0-9._-]+", "_", model.strip("/")).strip("_")[-80:]


def comparison_markdown(reports: Sequence[EvalReport]) -> str:
    """Models side by side on one dataset: accuracy, speed, memory, then accuracy per class."""
    lines = [
        f"# {reports[0].dataset}: {len(reports)} models",
        "",
        "| model | top-1 (%) | top-5 (%) | failed | ms / clip (model) | clips/s | peak memory (GB) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for report in reports:
        memory = report.peak_gpu_gb if report.peak_gpu_gb is not None else report.peak_rss_gb
        lines.append(
            f"| {report.model} | {100 * report.top1:.2f} | {100 * report.top5:.2f} | {report.failed} | "
            f"{report.latency_ms['model_mean']:.1f} | {report.clips_per_s:.2f} | {memory:.2f} |"
        )
    names = [f"{index}" for index in range(1, len(reports) + 1)]
    lines += ["", "Top-1 (%) per class (columns: the models in the order above)", ""]
    lines += ["| class | " + " | ".join(names) + " |", "| --- |" + " --- |" * len(reports)]
    for name in reports[0].classes:
        cells = [f"{100 * report.per_class.get(name, 0.0):.1f}" for report in reports]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", f"- device {reports[0].device}; each model in its own process; template(s): "
              + " / ".join(reports[0].templates)]  # fmt: skip
    return "\n".join(lines) + "\n"


def _prediction(item: EvalItem, scored: ScoredInput) -> Prediction:
    decode_ms, model_ms = 1000 * scored.decode_s, 1000 * scored.model_s
    if not isinstance(scored.result, Classification):
        return Prediction(item.path, item.fold, item.label, None, [], decode_ms, 0.0, scored.result.message)
    ranked = [score.label for score in scored.result.scores]
    # In multi-label mode no label may be detected (top_label None): accuracy then counts the best score.
    predicted = scored.result.top_label or ranked[0]
    return Prediction(item.path, item.fold, item.label, predicted, ranked[:5], decode_ms, model_ms)


def _report(
    classifier: Classifier | Ensemble,
    dataset: str,
    classes: Sequence[str],
    templates: Sequence[str],
    predictions: Sequence[Prediction],
    wall: float,
) -> EvalReport:
    scored = [p for p in predictions if p.error is None]
    members = classifier.members if isinstance(classifier, Ensemble) else [classifier]
    device = "+".join(dict.fromkeys(member.backend.device for member in members))
    by_fold: dict[str, list[Prediction]] = defaultdict(list)
    for prediction in scored:
        by_fold[prediction.fold].append(prediction)
    folds = {
        fold: {"top1": _share(rows, "correct"), "top5": _share(rows, "top5_correct"), "clips": len(rows)}
        for fold, rows in sorted(by_fold.items())
    }
    fold_top1 = [values["top1"] for values in folds.values()]
    per_class_rows: dict[str, list[Prediction]] = defaultdict(list)
    for prediction in scored:
        per_class_rows[prediction.label].append(prediction)
    index = {name: i for i, name in enumerate(classes)}
    confusion = np.zeros((len(classes), len(classes)), dtype=int)
    for prediction in scored:
        if prediction.predicted is not None:  # every scored clip has one; failed clips are not scored
            confusion[index[prediction.label], index[prediction.predicted]] += 1
    model_ms = [p.model_ms for p in scored]
    total_ms = [p.model_ms + p.decode_ms for p in scored]
    return EvalReport(
        dataset=dataset,
        model=classifier.model_id,
        device=device,
        templates=list(templates),
        classes=list(classes),
        clips=len(predictions),
        failed=len(predictions) - len(scored),
        top1=_share(scored, "correct"),
        top5=_share(scored, "top5_correct"),
        folds=folds,
        top1_fold_mean=float(np.mean(fold_top1)) if fold_top1 else 0.0,
        top1_fold_std=float(np.std(fold_top1)) if fold_top1 else 0.0,
        per_class={name: _share(per_class_rows[name], "correct") for name in classes},
        latency_ms={
            "model_mean": _mean(model_ms),
            "model_p50": _percentile(model_ms, 50),
            "model_p95": _percentile(model_ms, 95),
            "total_mean": _mean(total_ms),
            "total_p50": _percentile(total_ms, 50),
            "total_p95": _percentile(total_ms, 95),
        },
        clips_per_s=len(predictions) / wall if wall else 0.0,
        peak_rss_gb=peak_rss_gb(),
        peak_gpu_gb=_peak_gpu_gb(device),
        versions=_versions(),
        confusion=confusion.tolist(),
        adapter=classifier.adapter.name if classifier.adapter else None,
    )


def write_report(report: EvalReport, predictions: Sequence[Prediction], out: Path) -> list[Path]:
    """results.json, predictions.csv, confusion.csv, confusion.png, shots.png (with --shots) and report.md."""
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "results.json", out / "predictions.csv", out / "confusion.csv", out / "report.md"]
    (out / "results.json").write_text(json.dumps(asdict(report), indent=2, ensure_ascii=False))
    with open(out / "predictions.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            ["path", "fold", "label", "predicted", "correct", "top5", "top5_correct", "decode_ms", "model_ms", "error"]
        )
        for p in predictions:
            writer.writerow(
                [
                    p.path,
                    p.fold,
                    p.label,
                    p.predicted or "",
                    int(p.correct),
                    "|".join(p.top5),
                    int(p.top5_correct),
                    f"{p.decode_ms:.2f}",
                    f"{p.model_ms:.2f}",
                    p.error or "",
                ]
            )
    with open(out / "confusion.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["true \\ predicted", *report.classes])
        for name, row in zip(report.classes, report.confusion):
            writer.writerow([name, *row])
    (out / "report.md").write_text(markdown_table(report))
    _plot_confusion(report, out / "confusion.png")
    written.append(out / "confusion.png")
    if report.shots:
        _plot_shots(report, out / "shots.png")
        written.append(out / "shots.png")
    return written


def markdown_table(report: EvalReport) -> str:
    folds = ", ".join(f"fold {fold}: {100 * v['top1']:.2f}%" for fold, v in report.folds.items())
    return "\n".join(
        [
            f"# {report.dataset}: {report.model}",
            "",
            "| method | top-1 acc. (%) | top-5 acc. (%) | ms / clip (model) | ms / clip (total) | peak memory (GB) |",
            "| --- | --- | --- | --- | --- | --- |",
            f"| soundsift zero-shot, {report.model} | {100 * report.top1:.2f} | {100 * report.top5:.2f} | "
            f"{report.latency_ms['model_mean']:.1f} | {report.latency_ms['total_mean']:.1f} | "
            f"{report.peak_gpu_gb if report.peak_gpu_gb is not None else report.peak_rss_gb:.2f} |",
            "",
            f"- clips: {report.clips} ({report.failed} failed); folds: {folds}",
            f"- per-fold top-1 mean {100 * report.top1_fold_mean:.2f}% ± {100 * report.top1_fold_std:.2f}",
            f"- template(s): {' / '.join(report.templates)}; device {report.device}; {report.clips_per_s:.2f} clips/s",
            f"- latency p50/p95: model {report.latency_ms['model_p50']:.1f}/{report.latency_ms['model_p95']:.1f} ms, "
            f"total {report.latency_ms['total_p50']:.1f}/{report.latency_ms['total_p95']:.1f} ms",
            f"- versions: {', '.join(f'{k} {v}' for k, v in report.versions.items())}",
            "",
            *shots_markdown(report),
        ]
    )


def shots_markdown(report: EvalReport) -> list[str]:
    """The few-shot table: accuracy by examples per class, zero-shot first."""
    if not report.shots:
        return []
    lines = [
        "## Few-shot: accuracy by examples per class",
        "",
        "| examples per class | top-1 acc. (%) mean ± std | runs | method(s) chosen | fit time (s) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for shots, row in sorted(report.shots.items(), key=lambda item: int(item[0])):
        if "skipped" in row:
            lines.append(f"| {shots} | - ({row['skipped']}) | 0 | - | - |")
            continue
        methods = ", ".join(f"{name} ×{count}" for name, count in row.get("methods", {}).items()) or "zero-shot"
        fit = f"{row['fit_s_mean']:.2f}" if "fit_s_mean" in row else "-"
        lines.append(
            f"| {shots} | {100 * row['mean']:.2f} ± {100 * row['std']:.2f} | {row['runs']} | {methods} | {fit} |"
        )
    return [*lines, ""]


def peak_rss_gb() -> float:
    kilobytes = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kilobytes / (1024**2) if sys.platform != "darwin" else kilobytes / (1024**3)


def _plot_confusion(report: EvalReport, path: Path) -> None:
    plt = _pyplot()
    size = max(6.0, 0.22 * len(report.classes))
    figure, axes = plt.subplots(figsize=(size, size))
    axes.imshow(np.array(report.confusion), cmap="Blues")
    axes.set_xticks(range(len(report.classes)), report.classes, rotation=90, fontsize=7)
    axes.set_yticks(range(len(report.classes)), report.classes, fontsize=7)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(f"{report.dataset}: top-1 {100 * report.top1:.1f}%")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _plot_shots(report: EvalReport, path: Path) -> None:
    plt = _pyplot()
    rows = sorted((int(shots), row) for shots, row in report.shots.items() if "mean" in row)
    figure, axes = plt.subplots(figsize=(6, 4))
    axes.errorbar(
        [shots for shots, _ in rows],
        [100 * row["mean"] for _, row in rows],
        yerr=[100 * row["std"] for _, row in rows],
        marker="o",
        capsize=3,
    )
    axes.set_xscale("symlog", linthresh=1)
    axes.set_xticks([shots for shots, _ in rows], [str(shots) for shots, _ in rows])
    axes.set_xlabel("examples per class (0 = zero-shot)")
    axes.set_ylabel("top-1 accuracy (%)")
    axes.set_title(f"{report.dataset}: accuracy vs shots")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _share(rows: Sequence[Prediction], attribute: str) -> float:
    return sum(getattr(row, attribute) for row in rows) / len(rows) if rows else 0.0


def _mean(values: Sequence[float]) -> float:
    return float(statistics.fmean(values)) if values else 0.0


def _percentile(values: Sequence[float], percent: float) -> float:
    return float(np.percentile(values, percent)) if values else 0.0


def _peak_gpu_gb(device: str) -> float | None:
    if not device.startswith("cuda") or not TORCH.available():
        return None  # the onnx backend's CUDA memory is not tracked by torch
    return TORCH.require("GPU memory figures").cuda.max_memory_allocated(device) / 1024**3


def _versions() -> dict[str, str]:
    versions = {"soundsift": __version__, "python": platform.python_version(), "numpy": np.__version__}
    for dependency in (TORCH, TRANSFORMERS, ONNXRUNTIME):
        version = dependency.version()
        if version is not None:
            versions[dependency.module] = version
    return versions


def _pyplot() -> Any:
    """matplotlib's pyplot on the file-only Agg backend (the eval extra)."""
    matplotlib = MATPLOTLIB.require("the evaluation report's plots")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
