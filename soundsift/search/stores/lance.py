"""The default store: LanceDB embedded in the index folder (see soundsift.search.stores)."""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np

from soundsift.optional import LANCEDB
from soundsift.search.catalog import FileFilter
from soundsift.search.stores import Candidate, StoredFile, WindowRows, id_list

TABLE = "windows"
# Approximate search: IVF partitions of product-quantized vectors (PQ codes of 16-dimension
# pieces, 8 bits each); the nearest REFINE_FACTOR x k candidates are re-scored with the full
# vectors. The re-scoring is what holds recall: PQ codes cannot order many near-identical windows
# (hours of similar background), and at 1M clustered windows recall@10 was 0.51 with 10 x k
# candidates, 1.00 with 50 x k (p50 25 -> 30 ms). IVF-PQ over IVF-HNSW-SQ: on 2 cores the HNSW
# variant took 172 s to build for 100k 512-d vectors, IVF-PQ 29 s, at the same recall and latency.
# k-means runs 10 iterations on 64 samples per partition: building is the cost here, and re-scoring
# absorbs coarser partitions. A tenth of the partitions is probed (at least 20).
# Figures: benchmarks/search_scale.py, docs/search.md.
MIN_NPROBES = 20
PROBED_FRACTION = 0.1
REFINE_FACTOR = 50
DIMS_PER_SUBVECTOR = 16
KMEANS_ITERATIONS = 10
KMEANS_SAMPLES_PER_PARTITION = 64
# Deletes and adds of a run are compacted at its end; versions older than this are dropped then
# (not at once: a server searching beside the run may still read the previous version).
CLEANUP_AFTER = timedelta(minutes=5)


def partitions_for(rows: int) -> int:
    """IVF partitions: about sqrt(N), 316 at 100k windows, 1,000 at 1M."""
    return max(1, math.isqrt(rows))


def probes_for(indexed_rows: int) -> int:
    """Partitions searched: a tenth of them, at least MIN_NPROBES."""
    return max(MIN_NPROBES, math.ceil(PROBED_FRACTION * partitions_for(indexed_rows)))


class LanceStore:
    kind = "lance"
    holds_files = False

    def __init__(self, path: Path, dim: int) -> None:
        lancedb = LANCEDB.require("the default search index (LanceDB)")
        self.path, self.dim = path, dim
        # Interval 0: every query sees the latest committed version, also one written by another
        # process (an index run beside a running server).
        self._db = lancedb.connect(str(path), read_consistency_interval=timedelta(0))
        self._table: Any = self._open_table()

    def _open_table(self) -> Any:
        import pyarrow as pa

        schema = pa.schema(
            [
                ("id", pa.int64()),
                ("file_id", pa.int64()),
                ("start_s", pa.float64()),
                ("end_s", pa.float64()),
                ("vector", pa.list_(pa.float32(), self.dim)),
            ]
        )
        return self._db.create_table(TABLE, schema=schema, exist_ok=True)

    def count(self) -> int:
        return int(self._table.count_rows())

    def add(self, rows: WindowRows) -> None:
        if not len(rows):
            return
        import pyarrow as pa

        flat = pa.array(np.ascontiguousarray(rows.vectors, dtype=np.float32).ravel())
        self._table.add(
            pa.table(
                {
                    "id": pa.array(rows.ids, pa.int64()),
                    "file_id": pa.array(rows.file_ids, pa.int64()),
                    "start_s": pa.array(rows.starts, pa.float64()),
                    "end_s": pa.array(rows.ends, pa.float64()),
                    "vector": pa.FixedSizeListArray.from_arrays(flat, self.dim),
                }
            )
        )

    def delete_files(self, file_ids: Sequence[int]) -> None:
        for start in range(0, len(file_ids), 1000):
            self._table.delete(f"file_id IN ({id_list(file_ids[start : start + 1000])})")

    def describe_files(self, files: Sequence[StoredFile]) -> None:
        """Nothing to keep: the catalogue filters files for this store."""

    def search(
        self,
        vector: np.ndarray,
        k: int,
        *,
        file_ids: Collection[int] | None = None,
        rule: FileFilter | None = None,
        exact: bool = False,
    ) -> list[Candidate]:
        if rule is not None:
            raise ValueError("this store holds no file columns: filter by file_ids")
        if file_ids is not None and not file_ids:
            return []
        query = self._table.search(np.asarray(vector, dtype=np.float32)).distance_type("dot").limit(k)
        if file_ids is not None:
            query = query.where(f"file_id IN ({id_list(file_ids)})", prefilter=True)
        if exact:
            query = query.bypass_vector_index()
        elif (indexed := self._indexed_rows()) is not None:
            query = query.nprobes(probes_for(indexed)).refine_factor(REFINE_FACTOR)
        found = query.select(["id", "file_id", "start_s", "end_s", "vector", "_distance"]).to_arrow().to_pydict()
        return [
            Candidate(int(i), int(f), float(s), float(e), 1.0 - float(d), np.asarray(v, dtype=np.float32))
            for i, f, s, e, d, v in zip(
                found["id"], found["file_id"], found["start_s"], found["end_s"], found["_distance"], found["vector"]
            )
        ]

    def windows_of(self, file_ids: Sequence[int]) -> WindowRows:
        if not len(file_ids):
            return WindowRows.concat([], self.dim)
        found = (
            self._table.search()
            .where(f"file_id IN ({id_list(file_ids)})")
            .select(["id", "file_id", "start_s", "end_s", "vector"])
            .limit(None)
            .to_arrow()
            .sort_by("id")
        )
        return _rows_from_arrow(found, self.dim)

    def has_ann_index(self) -> bool:
        return self._indexed_rows() is not None

    def _indexed_rows(self) -> int | None:
        """Rows in the vector index when there is one (its partition count follows from it)."""
        for index in self._table.list_indices():
            if index.columns == ["vector"]:
                return int(getattr(index, "num_indexed_rows", 0) or 0)
        return None

    def optimize(self, ann_threshold: int) -> None:
        rows = self.count()
        if rows >= ann_threshold and rows > 0 and not self.has_ann_index():
            self.build_ann_index(rows)
        # Compaction, folding new rows into the vector index, dropping old versions.
        self._table.optimize(cleanup_older_than=CLEANUP_AFTER)

    def build_ann_index(self, rows: int | None = None) -> None:
        rows = rows or self.count()
        from lancedb.index import IvfPq

        config = IvfPq(
            distance_type="dot",
            num_partitions=partitions_for(rows),
            num_sub_vectors=max(1, self.dim // DIMS_PER_SUBVECTOR),
            max_iterations=KMEANS_ITERATIONS,
            sample_rate=KMEANS_SAMPLES_PER_PARTITION,
        )
        self._table.create_index("vector", config=config, replace=True)  # new API: the column comes first

    def drop_ann_index(self) -> None:
        for index in self._table.list_indices():
            if index.columns == ["vector"]:
                self._table.drop_index(index.name)

    def close(self) -> None:
        self._table = None


def _rows_from_arrow(table: Any, dim: int) -> WindowRows:
    vectors = table.column("vector").combine_chunks()
    return WindowRows(
        table.column("id").to_numpy().astype(np.int64),
        table.column("file_id").to_numpy().astype(np.int64),
        table.column("start_s").to_numpy().astype(np.float64),
        table.column("end_s").to_numpy().astype(np.float64),
        vectors.values.to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, dim),
    )
