"""Where the window vectors live. One protocol, two backends:

- ``lance`` (default): LanceDB embedded in the index folder. Columnar files on disk, so it holds
  millions of windows on one machine without loading them; rows are added and deleted in place;
  exact (flat) search until ``ann_threshold`` windows, then an IVF-PQ index with exact
  re-scoring of the candidates; rows added after the index was built are searched exactly and
  folded into it by the next run's optimize step.
- ``qdrant:URL``: a Qdrant server or cluster (it shards, replicates and builds HNSW itself), for
  libraries one machine cannot hold; ``qdrant:local`` is qdrant-client's embedded mode inside the
  index folder (small indexes and tests: it searches by brute force).

- ``postgresql://USER@HOST:PORT/DB``: PostgreSQL with pgvector (HNSW), for teams whose vectors
  live in the database they already run; credentials from the URL or the standard ``PG*``
  environment variables, never stored or shown (soundsift.search.stores.postgres).
- ``milvus://HOST:PORT``: a Milvus server or cluster; ``milvus:local`` (or a path ending in
  ``.db``) is Milvus Lite, its embedded engine, in a file (soundsift.search.stores.milvus).

Stores know nothing of the model or files: rows are (id, file_id, start_s, end_s, vector); the
catalogue maps file ids to paths and remains the one manifest (size, mtime, hash, status) whatever
the store. A store that ``holds_files`` also keeps each indexed file's path, duration and modified
time (``describe_files``), so path, duration and date filters run inside it rather than as a list
of file ids. Stores that live outside the index folder record the model that made their vectors
(``ModelStamp``) and refuse another. Vectors are unit length, so the score is the dot product.

Every store passes the contract suite in tests/test_stores.py; a store is supported when it does.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote

import numpy as np

from soundsift.core.fingerprint import same_model
from soundsift.errors import ConfigurationError
from soundsift.search.catalog import FileFilter
from soundsift.search.errors import IndexMismatchError

DEFAULT_STORE = "lance"
EF_SEARCH_RANGE = (1, 1000)  # pgvector's limits for hnsw.ef_search
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


@dataclass(frozen=True)
class StoredFile:
    """What a store that ``holds_files`` keeps of an indexed file, for filters it runs itself."""

    file_id: int
    path: str
    duration_s: float | None
    mtime_ns: int


@dataclass(frozen=True)
class ModelStamp:
    """The model whose vectors a store holds (its id and embedding fingerprint, as the manifest
    records them)."""

    model: str
    fingerprint: list[Any]

    def check(self, stored_model: str, stored_fingerprint: Sequence[Any], where: str) -> None:
        if not same_model(np.asarray(stored_fingerprint, dtype=np.float64), np.asarray(self.fingerprint)):
            raise IndexMismatchError(
                f"{where} holds vectors of {stored_model}; {self.model} embeds differently, and vectors of two "
                "models cannot be compared. Use that model, or another collection."
            )


class VectorStore(Protocol):
    kind: str
    holds_files: bool

    def count(self) -> int: ...

    def add(self, rows: WindowRows) -> None: ...

    def delete_files(self, file_ids: Sequence[int]) -> None: ...

    def describe_files(self, files: Sequence[StoredFile]) -> None:
        """Remember the files' columns (stores that ``holds_files``; a no-op for the others)."""
        ...

    def search(
        self,
        vector: np.ndarray,
        k: int,
        *,
        file_ids: Collection[int] | None = None,
        rule: FileFilter | None = None,
        exact: bool = False,
    ) -> list[Candidate]:
        """The k stored windows most similar to ``vector`` (best first), only of ``file_ids`` when
        given, only of files ``rule`` lets through when given (stores that ``holds_files`` only);
        ``exact`` compares every window even when an approximate index exists."""
        ...

    def windows_of(self, file_ids: Sequence[int]) -> WindowRows:
        """Every stored window of these files, vectors included, ordered by id (export)."""
        ...

    def has_ann_index(self) -> bool: ...

    def optimize(self, ann_threshold: int) -> None:
        """After a run: compact, build the approximate index once ``ann_threshold`` windows are
        stored, fold new rows into an existing one."""
        ...

    def close(self) -> None: ...


USAGE = (
    "use 'lance', 'qdrant:local', 'qdrant:http://HOST:6333', 'postgresql://USER@HOST:5432/DB', "
    "'milvus://HOST:19530', 'milvus:local' or a Milvus Lite file ending in .db"
)


def store_kind(spec: str) -> str:
    """``lance``, ``qdrant``, ``postgres`` or ``milvus`` for a spec of a known store (ConfigurationError,
    with the spec's credentials left out, otherwise)."""
    if spec == "lance":
        return "lance"
    if spec == "qdrant:local" or spec.startswith(("qdrant:http://", "qdrant:https://")):
        return "qdrant"
    if spec.startswith(("postgresql://", "postgres://")):
        return "postgres"
    if spec == "milvus:local" or spec.startswith("milvus://") or spec.endswith(".db"):
        return "milvus"
    raise ConfigurationError(f"unknown store {redact(spec)!r}: {USAGE}")


def check_store_spec(spec: str) -> str:
    """The spec when it names a known store (raised as ConfigurationError otherwise)."""
    store_kind(spec)
    return spec


def redact(spec: str) -> str:
    """The spec without its secrets (a URL's password, a ``password`` parameter): what the manifest
    stores and every message shows. The user part stays (it names the role, not a secret).

    Read so that nothing leaks whatever a password holds: everything before the last '@' is the
    user part, so a password with '/', '?', '#' or '@' in it is cut whole (a URL parser would end
    the user part early there and show the rest); the query is kept byte for byte but for the secret
    parameters, so two specs of different servers never redact alike."""
    if "://" not in spec:
        return spec
    scheme, rest = spec.split("://", 1)
    if "@" in rest:
        user_part, rest = rest.rsplit("@", 1)
        rest = f"{user_part.split(':', 1)[0]}@{rest}"
    base, mark, query = rest.partition("?")
    if mark:
        kept = [piece for piece in query.split("&") if unquote(piece.split("=", 1)[0]).lower() not in SECRET_PARAMETERS]
        rest = base + ("?" + "&".join(kept) if kept else "")
    return f"{scheme}://{rest}"


SECRET_PARAMETERS = frozenset({"password", "token", "api_key", "sslpassword"})


def open_store(
    spec: str,
    folder: Path,
    dim: int,
    collection: str,
    stamp: ModelStamp | None = None,
    *,
    ef_search: int | None = None,
) -> VectorStore:
    """The store a spec names (see ``USAGE``); ``stamp`` is the index's model, which stores outside
    the folder record on creation and check on every open; ``ef_search`` is PostgreSQL's HNSW search
    breadth (default ``postgres.HNSW_EF_SEARCH``)."""
    kind = store_kind(spec)
    if kind == "lance":
        from soundsift.search.stores.lance import LanceStore

        return LanceStore(folder / "vectors.lance", dim)
    if kind == "qdrant":
        from soundsift.search.stores.qdrant import QdrantStore

        return QdrantStore(spec.removeprefix("qdrant:"), folder / "qdrant", dim, collection)
    if kind == "postgres":
        from soundsift.search.stores.postgres import PostgresStore

        return PostgresStore(spec, dim, collection, stamp, ef_search=ef_search)
    from soundsift.search.stores.milvus import MilvusStore

    return MilvusStore(spec, folder, dim, collection, stamp)


def id_list(file_ids: Collection[int]) -> str:
    """A SQL list of integer ids (ints only, so nothing is interpolated but numbers)."""
    return ",".join(str(int(file_id)) for file_id in sorted(file_ids))
