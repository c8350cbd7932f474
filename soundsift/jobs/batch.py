"""Batch classification of whole collections with one Classifier or an Ensemble of them, resumable
through its output file.

Decoding and resampling run on worker threads (soundfile, PyAV and soxr release the GIL) while the
main thread runs batched inference (`Classifier.iter_results`, `Ensemble.iter_results`). Output
rows are appended and flushed (fsync) after every batch (soundsift.jobs.outputs), so an interrupted
run loses no finished rows; a rerun with the same --out skips files already done.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from soundsift.core.classifier import Classifier
from soundsift.core.ensemble import Ensemble, EnsembleLabels
from soundsift.core.pipeline import ScoredInput
from soundsift.core.scoring import PreparedLabels, ScoringOptions
from soundsift.jobs.outputs import RowWriter, result_row


@dataclass
class BatchSummary:
    skipped: int = 0
    done: int = 0
    failed: int = 0
    labels: Counter = field(default_factory=Counter)
    wall_s: float = 0.0
    decode_s: float = 0.0
    inference_s: float = 0.0
    interrupted: bool = False

    def count(self, rows: Iterable[Mapping[str, Any]]) -> None:
        for row in rows:
            if row.get("error"):
                self.failed += 1
            else:
                self.done += 1
                self.labels[row.get("top_label") or "(none)"] += 1

    def render(self) -> str:
        processed = self.done + self.failed
        rate = processed / self.wall_s if self.wall_s else 0.0
        lines = [
            f"{processed} files in {self.wall_s:.1f} s ({rate:.2f} files/s): {self.done} classified, "
            f"{self.failed} failed, {self.skipped} already done (skipped)",
            f"decode+resample {self.decode_s:.1f} s of worker time; model {self.inference_s:.1f} s "
            f"({100 * self.inference_s / self.wall_s if self.wall_s else 0:.0f}% of wall time busy)",
        ]
        if self.labels:
            lines.append("top labels: " + ", ".join(f"{label} {n}" for label, n in self.labels.most_common()))
        if self.interrupted:
            lines.append("interrupted: every finished row is saved; rerun the same command to resume")
        return "\n".join(lines)


class LocalBatchRunner:
    """Classify files with one Classifier (or an Ensemble, with the labels it prepared): `workers`
    threads decode ahead of batched inference."""

    def __init__(
        self,
        classifier: Classifier | Ensemble,
        prepared: PreparedLabels | EnsembleLabels,
        *,
        workers: int = 2,
        options: ScoringOptions | None = None,
    ) -> None:
        self.classifier, self.prepared = classifier, prepared
        self.workers = max(1, workers)
        self.options = options or ScoringOptions()

    def run(self, paths: Sequence[str], writer: RowWriter, summary: BatchSummary, progress: Any = None) -> None:
        """Rows are appended (and flushed to disk) once per model batch."""
        batch_size = self.classifier.settings.batch_size
        rows: list[dict[str, Any]] = []
        for item in self._results(paths):
            summary.decode_s += item.decode_s
            summary.inference_s += item.model_s
            rows.append(result_row(item.result, paths[item.index]))
            if len(rows) >= batch_size:
                self._write(rows, writer, summary, progress)
                rows = []
        if rows:
            self._write(rows, writer, summary, progress)

    def _results(self, paths: Sequence[str]) -> Iterator[ScoredInput]:
        options = self.options
        scoring: dict[str, Any] = {
            "threshold": options.threshold,
            "min_margin": options.min_margin,
            "label_thresholds": options.label_thresholds,
            "decode_workers": self.workers,
        }
        if isinstance(self.classifier, Ensemble) and isinstance(self.prepared, EnsembleLabels):
            return self.classifier.iter_results(paths, self.prepared, **scoring)
        if isinstance(self.classifier, Classifier) and isinstance(self.prepared, PreparedLabels):
            return self.classifier.iter_results(paths, self.prepared, **scoring)
        raise TypeError("an Ensemble takes the labels it prepared (EnsembleLabels), a Classifier PreparedLabels")

    @staticmethod
    def _write(rows: list[dict[str, Any]], writer: RowWriter, summary: BatchSummary, progress: Any) -> None:
        writer.append(rows)
        summary.count(rows)
        if progress is not None:
            progress.update(len(rows))


def make_progress(total: int, enabled: bool | None = None) -> Any:
    """A tqdm bar on a terminal (files/s and ETA); None when stderr is a pipe or file."""
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="file", dynamic_ncols=True, file=sys.stderr)
