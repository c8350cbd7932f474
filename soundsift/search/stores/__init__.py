"""Where the window vectors live. One protocol, two backends:

- ``lance`` (default): LanceDB embedded in the index folder. Columnar files on disk, so it holds
  millions of windows on one machine without loading them; rows are added and deleted in place;
  exact (flat) search until ``ann_threshold`` windows, then an IVF-PQ index with exact
  re-scoring of the candidates; rows added after the index was built are searched exactly and
  folded into it by the next run's optimize step.
- ``qdrant:URL``: a Qdrant server or cluster (it shards, replicates and builds HNSW itself), for
  libraries one machine cannot hold; ``qdrant:local`` is qdrant-client's embedded mode inside the
  index folder (small indexes and tests: it searches by brute force).

Stores know nothing of the model or files: rows are (id, file_id, start_s, end_s, vector); the
catalogue maps file ids to paths. Vectors are unit length, so the score is the dot product.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from soundsift.errors import ConfigurationError

DEFAULT_STORE = "lance"
# Window ids are file_id * WINDOW_ID_SPAN + the window's number within its file.
WINDOW_ID_SPAN = 1 << 24


@dataclass(frozen=True)
class WindowRows:
    """Windows to store, column by column; ``vectors`` is (N, D) float32 of unit rows."""

    ids: np.ndarray
    file_ids: np.ndarray
    starts: np.ndarray
    ends: np.ndarray
    vectors: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def concat(cls, parts: Sequence[WindowRows], dim: int) -> WindowRows:
        if not parts:
            empty = np.zeros(0)
            return cls(empty.astype(np.int64), empty.astype(np.int64), empty, empty, np.zeros((0, dim), np.float32))
        return cls(
            np.concatenate([p.ids for p in parts]).astype(np.int64),
            np.concatenate([p.file_ids for p in parts]).astype(np.int64),
            np.concatenate([p.starts for p in parts]).astype(np.float64),
            np.concatenate([p.ends for p in parts]).astype(np.float64),
            np.concatenate([p.vectors for p in parts]).astype(np.float32),
        )


@dataclass(frozen=True)
class Candidate:
    """One stored window found by a search, with its vector (for exclusions and re-ranking)."""

    id: int
    file_id: int
    start_s: float
    end_s: float
    score: float
    vector: np.ndarray


class VectorStore(Protocol):
    kind: str

    def count(self) -> int: ...

    def add(self, rows: WindowRows) -> None: ...

    def delete_files(self, file_ids: Sequence[int]) -> None: ...

    def search(
        self, vector: np.ndarray, k: int, *, file_ids: Collection[int] | None = None, exact: bool = False
    ) -> list[Candidate]:
        """The k stored windows most similar to ``vector`` (best first), only of ``file_ids`` when
        given; ``exact`` compares every window even when an approximate index exists."""
        ...

    def has_ann_index(self) -> bool: ...

    def optimize(self, ann_threshold: int) -> None:
        """After a run: compact, build the approximate index once ``ann_threshold`` windows are
        stored, fold new rows into an existing one."""
        ...

    def close(self) -> None: ...


def open_store(spec: str, folder: Path, dim: int, collection: str) -> VectorStore:
    """The store a spec names: ``lance``, ``qdrant:local`` or ``qdrant:http(s)://host:port``."""
    if spec == "lance":
        from soundsift.search.stores.lance import LanceStore

        return LanceStore(folder / "vectors.lance", dim)
    if spec.startswith("qdrant:"):
        from soundsift.search.stores.qdrant import QdrantStore

        target = spec.removeprefix("qdrant:")
        return QdrantStore(target, folder / "qdrant", dim, collection)
    raise ConfigurationError(f"unknown store {spec!r}: use 'lance', 'qdrant:local' or 'qdrant:http://HOST:6333'")


def check_store_spec(spec: str) -> str:
    """The spec when it names a known store (raised as ConfigurationError otherwise)."""
    if spec == "lance" or spec == "qdrant:local":
        return spec
    if spec.startswith(("qdrant:http://", "qdrant:https://")):
        return spec
    raise ConfigurationError(f"unknown store {spec!r}: use 'lance', 'qdrant:local' or 'qdrant:http://HOST:6333'")


def id_list(file_ids: Collection[int]) -> str:
    """A SQL list of integer ids (ints only, so nothing is interpolated but numbers)."""
    return ",".join(str(int(file_id)) for file_id in sorted(file_ids))
