"""Result files of the batch job: one row per input in JSONL, CSV or Parquet, appended and flushed
after every batch so an interrupted run loses no finished rows and a rerun skips them."""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from soundsift.core.results import Classification, FailedInput
from soundsift.errors import EXIT_USAGE, SoundsiftError
from soundsift.optional import PYARROW

FIXED_COLUMNS = ["path", "top_label", "confidence", "margin", "uncertain", "silent", "duration_s", "error"]


class OutputError(SoundsiftError):
    """The output file cannot be used (unknown extension, other labels, corrupt middle)."""

    code = "invalid_output"
    exit_code = EXIT_USAGE


def result_row(result: Classification | FailedInput, path: str) -> dict[str, Any]:
    """One output row; the same schema for every engine and format."""
    if isinstance(result, FailedInput):
        return {
            "path": path,
            "top_label": None,
            "confidence": None,
            "margin": None,
            "uncertain": None,
            "silent": None,
            "duration_s": None,
            "error": f"{result.error}: {result.message}",
            "scores": {},
        }
    row: dict[str, Any] = {
        "path": path,
        "top_label": result.top_label,
        "confidence": result.confidence,
        "margin": result.margin,
        "uncertain": result.uncertain,
        "silent": result.silent,
        "duration_s": result.duration_s,
        "error": None,
        "scores": {score.label: score.score for score in result.scores},
    }
    if result.detected_labels is not None:
        row["detected_labels"] = result.detected_labels
    return row


class RowWriter(Protocol):
    def done_paths(self) -> set[str]: ...
    def append(self, rows: Sequence[Mapping[str, Any]]) -> None: ...
    def close(self) -> None: ...


def open_output(path: Path, labels: Sequence[str]) -> RowWriter:
    """The writer for ``path``'s format; its folder is created when missing. OutputError (one line)
    for an unknown format, a folder that cannot be made or a file that cannot be written."""
    writers: dict[str, Callable[[Path, Sequence[str]], RowWriter]] = {
        ".jsonl": JsonlWriter,
        ".csv": CsvWriter,
        ".parquet": ParquetWriter,
    }
    writer = writers.get(path.suffix.lower())
    if writer is None:
        raise OutputError(f"--out {path}: use a .jsonl, .csv or .parquet file name")
    if path.is_dir():
        raise OutputError(f"--out {path} is a folder; give a file name such as {path / 'results.jsonl'}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return writer(path, labels)
    except OSError as error:
        raise OutputError(f"--out {path}: cannot write there ({error.strerror or error})") from None


def _drop_partial_last_line(path: Path) -> None:
    """A killed run can leave half a line at the end; cut it so appends start on a clean line."""
    if not path.exists():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with open(path, "r+b") as handle:
            handle.truncate(data.rfind(b"\n") + 1)


class JsonlWriter:
    def __init__(self, path: Path, labels: Sequence[str]) -> None:
        self.path, self.labels = path, list(labels)
        _drop_partial_last_line(path)
        self._rows = self._read()
        self._handle = open(path, "a", encoding="utf-8")  # noqa: SIM115 - open for the whole run

    def _read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        rows = []
        for number, line in enumerate(self.path.read_text(encoding="utf-8").splitlines(), start=1):
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                raise OutputError(
                    f"{self.path}:{number} is not valid JSON; the file is not a soundsift output"
                ) from None
            if row.get("scores") and sorted(row["scores"]) != sorted(self.labels):
                raise OutputError(
                    f"{self.path} holds results for other labels ({', '.join(row['scores'])}); "
                    "use another --out or the same labels"
                )
            rows.append(row)
        return rows

    def done_paths(self) -> set[str]:
        return {row["path"] for row in self._rows}

    def append(self, rows: Sequence[Mapping[str, Any]]) -> None:
        for row in rows:
            self._handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        _flush(self._handle)

    def close(self) -> None:
        self._handle.close()


class CsvWriter:
    def __init__(self, path: Path, labels: Sequence[str]) -> None:
        self.path, self.labels = path, list(labels)
        self.header = csv_header(self.labels)
        _drop_partial_last_line(path)
        self._done = self._read()
        fresh = not path.exists() or path.stat().st_size == 0
        self._handle = open(path, "a", encoding="utf-8", newline="")  # noqa: SIM115 - open for the whole run
        self._writer = csv.writer(self._handle)
        if fresh:
            self._writer.writerow(self.header)
            _flush(self._handle)

    def _read(self) -> set[str]:
        if not self.path.exists() or self.path.stat().st_size == 0:
            return set()
        with open(self.path, encoding="utf-8", newline="") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if header != self.header:
                raise OutputError(
                    f"{self.path} has other columns ({', '.join(header or [])}); use another --out or the same labels"
                )
            return {row[0] for row in reader if row}

    def done_paths(self) -> set[str]:
        return set(self._done)

    def append(self, rows: Sequence[Mapping[str, Any]]) -> None:
        for row in rows:
            self._writer.writerow(csv_cells(row, self.labels))
        _flush(self._handle)

    def close(self) -> None:
        self._handle.close()


class ParquetWriter:
    """Rows go to a resumable JSONL beside the target; the Parquet file is written from it at close."""

    def __init__(self, path: Path, labels: Sequence[str]) -> None:
        PYARROW.require("Parquet output (or use .jsonl / .csv)")
        self.path, self.labels = path, list(labels)
        self.progress = path.with_name(path.name + ".progress.jsonl")
        self._rows = JsonlWriter(self.progress, labels)

    def done_paths(self) -> set[str]:
        return self._rows.done_paths()

    def append(self, rows: Sequence[Mapping[str, Any]]) -> None:
        self._rows.append(rows)

    def close(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        self._rows.close()
        rows = [json.loads(line) for line in self.progress.read_text(encoding="utf-8").splitlines()]
        columns = {column: [row.get(column) for row in rows] for column in FIXED_COLUMNS}
        for label in self.labels:
            columns[f"score:{label}"] = [(row.get("scores") or {}).get(label) for row in rows]
        pq.write_table(pa.table(columns), self.path)


def csv_header(labels: Sequence[str]) -> list[str]:
    """The CSV columns for this label set: the fixed ones, then one ``score:<label>`` per label."""
    return FIXED_COLUMNS + [f"score:{label}" for label in labels]


def csv_cells(row: Mapping[str, Any], labels: Sequence[str]) -> list[str]:
    """A ``result_row`` as CSV cells in ``csv_header`` order (floats to 6 decimals, None empty)."""
    scores = row.get("scores") or {}
    return [_csv_value(row.get(column)) for column in FIXED_COLUMNS] + [
        _csv_value(scores.get(label)) for label in labels
    ]


def _csv_value(value: Any) -> str:
    if value is None:
        return ""
    return f"{value:.6f}" if isinstance(value, float) else str(value)


def _flush(handle: io.TextIOBase) -> None:
    handle.flush()
    os.fsync(handle.fileno())
