"""An index's windows as Parquet, to move a library between stores or machines.

``export_index`` writes one row per stored window of every indexed file: ``path``, ``start_s``,
``end_s``, ``vector`` (fixed-size list of float32), ``model``, and the file's ``size``,
``mtime_ns``, ``sha256`` and ``duration_s`` (repeated per window; Parquet's encodings make that
cheap), ordered by file. The schema's metadata records the model's fingerprint, the window layout
and the format version. ``load_index`` reads such a file into a Library (any store) through the same
Writer an indexing run uses, so the catalogue records each file as indexed with its size, mtime and
hash, and the next ``soundsift index`` run skips files that did not change.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from soundsift.core.fingerprint import same_model
from soundsift.optional import PYARROW
from soundsift.search.catalog import Catalog, FileRow
from soundsift.search.embedding import FileTask, FileVectors
from soundsift.search.errors import IndexMismatchError, QueryError
from soundsift.search.indexer import Plan, Writer
from soundsift.search.results import IndexReport
from soundsift.search.stores import VectorStore

EXPORT_FORMAT = 1
FORMAT_KEY = b"soundsift.export"
# Files read from the store per step: a row group each.
FILES_PER_GROUP = 256


@dataclass(frozen=True)
class ExportHeader:
    model: str
    dim: int
    fingerprint: list[Any]
    window_s: float
    hop_s: float

    def check(self, model: str, fingerprint: np.ndarray, source: str) -> None:
        if not same_model(np.asarray(self.fingerprint), fingerprint):
            raise IndexMismatchError(
                f"{source} holds vectors of {self.model}; {model} embeds differently, and vectors of two models "
                "cannot be compared. Load it into an index of its model (--model)."
            )


def _schema(pa: Any, header: ExportHeader) -> Any:
    fields = [
        ("path", pa.string()),
        ("start_s", pa.float64()),
        ("end_s", pa.float64()),
        ("vector", pa.list_(pa.float32(), header.dim)),
        ("model", pa.string()),
        ("size", pa.int64()),
        ("mtime_ns", pa.int64()),
        ("sha256", pa.string()),
        ("duration_s", pa.float64()),
    ]
    meta = {"format": EXPORT_FORMAT, **header.__dict__}
    return pa.schema(fields, metadata={FORMAT_KEY: json.dumps(meta).encode()})


def export_index(catalog: Catalog, store: VectorStore, header: ExportHeader, out: Path) -> tuple[int, int]:
    """Write the index to ``out``; (files, windows) written."""
    pa = PYARROW.require("export-index (Parquet)")
    import pyarrow.parquet as pq

    schema = _schema(pa, header)
    files = windows = 0
    rows = [row for row in catalog.rows("indexed") if row.windows]
    with pq.ParquetWriter(str(out), schema, compression="zstd") as writer:
        for start in range(0, len(rows), FILES_PER_GROUP):
            group = {row.id: row for row in rows[start : start + FILES_PER_GROUP]}
            stored = store.windows_of(list(group))
            if not len(stored):
                continue
            order = np.lexsort((stored.ids, stored.file_ids))
            file_rows: list[FileRow] = [group[int(f)] for f in stored.file_ids[order]]
            flat = pa.array(np.ascontiguousarray(stored.vectors[order], dtype=np.float32).ravel())
            table = pa.table(
                {
                    "path": [r.path for r in file_rows],
                    "start_s": pa.array(stored.starts[order], pa.float64()),
                    "end_s": pa.array(stored.ends[order], pa.float64()),
                    "vector": pa.FixedSizeListArray.from_arrays(flat, header.dim),
                    "model": [header.model] * len(order),
                    "size": pa.array([r.size for r in file_rows], pa.int64()),
                    "mtime_ns": pa.array([r.mtime_ns for r in file_rows], pa.int64()),
                    "sha256": [r.sha256 for r in file_rows],
                    "duration_s": pa.array([r.duration_s for r in file_rows], pa.float64()),
                },
                schema=schema,
            )
            writer.write_table(table)
            files += len(set(stored.file_ids.tolist()))
            windows += len(order)
    return files, windows


def read_header(source: Path) -> ExportHeader:
    PYARROW.require("index --from-parquet")
    import pyarrow.parquet as pq

    try:
        metadata = pq.read_schema(str(source)).metadata or {}
    except (OSError, ValueError) as error:
        raise QueryError(f"{source} is not a Parquet file ({error})") from None
    if FORMAT_KEY not in metadata:
        raise QueryError(f"{source} is not a soundsift export (soundsift export-index writes one)")
    meta = json.loads(metadata[FORMAT_KEY])
    if int(meta.get("format", 0)) > EXPORT_FORMAT:
        raise QueryError(f"{source} was written by a newer soundsift (export format {meta['format']})")
    return ExportHeader(meta["model"], int(meta["dim"]), meta["fingerprint"], meta["window_s"], meta["hop_s"])


def _files(source: Path, dim: int) -> Iterator[tuple[dict[str, Any], list[float], list[float], np.ndarray]]:
    """(the file's columns, starts, ends, vectors) per file, in the order written."""
    import pyarrow.parquet as pq

    current: dict[str, Any] | None = None
    starts: list[float] = []
    ends: list[float] = []
    vectors: list[np.ndarray] = []
    for batch in pq.ParquetFile(str(source)).iter_batches(batch_size=8192):
        columns = batch.to_pydict()
        flat = batch.column("vector").values.to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, dim)
        for n, path in enumerate(columns["path"]):
            if current is None or path != current["path"]:
                if current is not None:
                    yield current, starts, ends, np.stack(vectors)
                current = {key: columns[key][n] for key in ("path", "size", "mtime_ns", "sha256", "duration_s")}
                starts, ends, vectors = [], [], []
            starts.append(float(columns["start_s"][n]))
            ends.append(float(columns["end_s"][n]))
            vectors.append(flat[n])
    if current is not None:
        yield current, starts, ends, np.stack(vectors)


def load_index(catalog: Catalog, store: VectorStore, source: Path, dim: int) -> IndexReport:
    """Every file of ``source`` into the catalogue and the store (replacing what they held of it)."""
    plan, report = Plan(), IndexReport()
    writer = Writer(catalog, store, plan, report, dim)
    try:
        for columns, starts, ends, vectors in _files(source, dim):
            path, size, mtime_ns = str(columns["path"]), int(columns["size"]), int(columns["mtime_ns"])
            known = catalog.get(path)
            file_id = catalog.begin(path, size, mtime_ns)
            plan.kinds[file_id] = "added" if known is None else "changed"
            plan.stats[file_id] = (size, mtime_ns)
            report.files_seen += 1
            writer.accept(
                FileVectors(
                    task=FileTask(file_id, path),
                    sha256=str(columns["sha256"]),
                    starts=starts,
                    ends=ends,
                    vectors=list(vectors),
                    duration_s=float(columns["duration_s"] or 0.0),
                )
            )
    finally:
        writer.flush()
    return report
