"""Vectors in PostgreSQL with the pgvector extension (``--store postgresql://USER@HOST:5432/DB``).

- Credentials come from the URL or libpq's own sources (the ``PG*`` environment variables such as
  ``PGPASSWORD``, ``~/.pgpass``); the manifest and every message hold the URL without its password
  (``soundsift.search.stores.redact``), so a later run without the password in the URL needs one of
  those sources.
- soundsift creates and migrates its schema itself: ``soundsift_schema`` holds the version, each
  migration runs once under an advisory lock (two runs starting together do not race), and a
  database migrated by a newer soundsift is refused rather than written with an old layout.
- ``soundsift_collections`` records each collection's dimension, model and embedding fingerprint;
  opening a collection with another model is refused (IndexMismatchError), whichever index folder
  asks.
- A collection is two tables: ``<name>_windows`` (id, file_id, start_s, end_s, embedding
  vector(dim)) and ``<name>_files`` (file_id, path, duration_s, mtime_ns) of the indexed files, so
  path glob, duration and date filters run in SQL (a join, a regex on the path) rather than as a
  list of ids. The catalogue in the index folder stays the manifest (size, mtime, hash, status).
- Below ``ann_threshold`` windows searches are exact (a scan ordered by inner product); once that
  many are stored ``optimize`` builds an HNSW index (``vector_ip_ops``, m 16, ef_construction 64),
  which PostgreSQL then maintains on every insert. Filtered searches are exact: pgvector 0.6's
  HNSW scan filters after it has picked ``ef_search`` candidates and so can return fewer than k.
- ``ef_search`` (an index setting, ``soundsift index --ef-search``) sets how many candidates the
  HNSW scan keeps, at least twice k and at most pgvector's 1000.
- Connections come from a small pool (psycopg_pool), so a server answering many searches does not
  connect per query.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

from soundsift.optional import PSYCOPG, PSYCOPG_POOL
from soundsift.search.catalog import FileFilter, glob_regex
from soundsift.search.errors import IndexMismatchError, StoreUnavailableError
from soundsift.search.stores import EF_SEARCH_RANGE, Candidate, ModelStamp, StoredFile, WindowRows, redact

SCHEMA_VERSION = 1
# Each step runs once, in order, in the transaction that moves soundsift_schema to its number.
MIGRATIONS: dict[int, str] = {
    1: """
        CREATE EXTENSION IF NOT EXISTS vector;
        CREATE TABLE soundsift_collections (
            name text PRIMARY KEY,
            dim integer NOT NULL,
            model text NOT NULL,
            fingerprint jsonb NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now()
        );
    """,
}
# pg_advisory_xact_lock key: "soundsift" as an int (one lock for migrations in any database).
MIGRATION_LOCK = 0x736F756E64736966
POOL_MIN, POOL_MAX = 1, 4
CONNECT_TIMEOUT_S = 10
HNSW_M, HNSW_EF_CONSTRUCTION = 16, 64
HNSW_EF_SEARCH = 200  # 1M windows: recall@10 0.87 at 100, 0.96 at 200 (+1.3 ms), 0.96 at 400 (docs/search.md)
COLLECTION_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,40}$")


def vector_text(vector: np.ndarray) -> str:
    """pgvector's text form, ``[0.1,0.2,...]`` (shortest exact float32 repr)."""
    return "[" + ",".join(map(repr, np.asarray(vector, dtype=np.float32).tolist())) + "]"


class PostgresStore:
    kind = "postgres"
    holds_files = True

    def __init__(
        self, url: str, dim: int, collection: str, stamp: ModelStamp | None, *, ef_search: int | None = None
    ) -> None:
        self.psycopg = PSYCOPG.require("a PostgreSQL search index")
        pool_module = PSYCOPG_POOL.require("a PostgreSQL search index")
        if not COLLECTION_NAME.match(collection):
            raise IndexMismatchError(f"{collection!r} is not a collection name soundsift makes")
        self.public_url, self.dim, self.collection = redact(url), dim, collection
        # Candidates the HNSW scan keeps (at least twice k): more finds more of the true neighbours
        # and costs time; benchmarks/search_scale.py --pg-ef-search measures the trade.
        self.ef_search = ef_search or HNSW_EF_SEARCH
        sql = self.psycopg.sql
        self._windows = sql.Identifier(f"{collection}_windows")
        self._files = sql.Identifier(f"{collection}_files")
        self._hnsw = sql.Identifier(f"{collection}_hnsw")
        self._by_file = sql.Identifier(f"{collection}_file_id")
        # The conninfo goes to libpq only; the pool's name (which its log lines show) is the redacted URL.
        self._pool = pool_module.ConnectionPool(
            url,
            min_size=POOL_MIN,
            max_size=POOL_MAX,
            kwargs={"autocommit": True, "connect_timeout": CONNECT_TIMEOUT_S},
            name=f"soundsift {self.public_url}",
            open=False,
        )
        try:
            # One direct connection first: libpq's own reason (refused, authentication) at once,
            # where the pool would retry in the background until its timeout.
            self.psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT_S).close()
            self._pool.open(wait=True, timeout=CONNECT_TIMEOUT_S)
        except Exception as error:
            self._pool.close()
            raise StoreUnavailableError(
                f"cannot connect to PostgreSQL at {self.public_url}: {_reason(error)}"
            ) from None
        try:
            self._migrate()
            self._open_collection(stamp)
        except BaseException:
            self._pool.close()
            raise

    def __repr__(self) -> str:
        return f"PostgresStore({self.public_url!r}, collection={self.collection!r})"

    @contextmanager
    def _connection(self) -> Iterator[Any]:
        try:
            with self._pool.connection() as connection:
                yield connection
        except self.psycopg.OperationalError as error:
            raise StoreUnavailableError(f"PostgreSQL at {self.public_url}: {_reason(error)}") from None

    def _migrate(self) -> None:
        with self._connection() as connection, connection.transaction():
            connection.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            connection.execute("CREATE TABLE IF NOT EXISTS soundsift_schema (version integer NOT NULL)")
            row = connection.execute("SELECT version FROM soundsift_schema").fetchone()
            version = int(row[0]) if row else 0
            if version > SCHEMA_VERSION:
                raise IndexMismatchError(
                    f"the database at {self.public_url} has soundsift's schema {version}; this soundsift knows "
                    f"{SCHEMA_VERSION}: upgrade soundsift"
                )
            for step in range(version + 1, SCHEMA_VERSION + 1):
                try:
                    connection.execute(MIGRATIONS[step])
                except self.psycopg.errors.FeatureNotSupported as error:
                    raise StoreUnavailableError(
                        f"PostgreSQL at {self.public_url} lacks the pgvector extension: {_reason(error)}"
                    ) from None
            if row is None:
                connection.execute("INSERT INTO soundsift_schema (version) VALUES (%s)", (SCHEMA_VERSION,))
            elif version != SCHEMA_VERSION:
                connection.execute("UPDATE soundsift_schema SET version = %s", (SCHEMA_VERSION,))

    def _open_collection(self, stamp: ModelStamp | None) -> None:
        sql = self.psycopg.sql
        with self._connection() as connection, connection.transaction():
            connection.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            row = connection.execute(
                "SELECT dim, model, fingerprint FROM soundsift_collections WHERE name = %s", (self.collection,)
            ).fetchone()
            where = f"the collection {self.collection} at {self.public_url}"
            if row is not None:
                dim, model, fingerprint = row
                if int(dim) != self.dim:
                    raise IndexMismatchError(f"{where} holds {dim}-dimension vectors, not {self.dim}")
                if stamp is not None:
                    stamp.check(model, fingerprint, where)
                return
            if stamp is None:
                raise IndexMismatchError(f"{where} does not exist, and only an index with a model can create it")
            connection.execute(
                "INSERT INTO soundsift_collections (name, dim, model, fingerprint) VALUES (%s, %s, %s, %s)",
                (self.collection, self.dim, stamp.model, json.dumps(stamp.fingerprint)),
            )
            connection.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} (id bigint PRIMARY KEY, file_id bigint NOT NULL, "
                    "start_s double precision NOT NULL, end_s double precision NOT NULL, embedding vector({}) NOT NULL)"
                ).format(self._windows, sql.Literal(self.dim))
            )
            connection.execute(
                sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (file_id)").format(self._by_file, self._windows)
            )
            connection.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} (file_id bigint PRIMARY KEY, path text NOT NULL, "
                    "duration_s double precision, mtime_ns bigint NOT NULL)"
                ).format(self._files)
            )

    def count(self) -> int:
        with self._connection() as connection:
            row = connection.execute(self.psycopg.sql.SQL("SELECT count(*) FROM {}").format(self._windows)).fetchone()
        return int(row[0])

    def add(self, rows: WindowRows) -> None:
        if not len(rows):
            return
        statement = self.psycopg.sql.SQL("COPY {} (id, file_id, start_s, end_s, embedding) FROM STDIN").format(
            self._windows
        )
        with (
            self._connection() as connection,
            connection.transaction(),
            connection.cursor() as cursor,
            cursor.copy(statement) as copy,
        ):
            for i, f, s, e, v in zip(rows.ids, rows.file_ids, rows.starts, rows.ends, rows.vectors):
                copy.write_row((int(i), int(f), float(s), float(e), vector_text(v)))

    def delete_files(self, file_ids: Sequence[int]) -> None:
        if not len(file_ids):
            return
        sql, ids = self.psycopg.sql, [int(file_id) for file_id in file_ids]
        with self._connection() as connection, connection.transaction():
            connection.execute(sql.SQL("DELETE FROM {} WHERE file_id = ANY(%s)").format(self._windows), (ids,))
            connection.execute(sql.SQL("DELETE FROM {} WHERE file_id = ANY(%s)").format(self._files), (ids,))

    def describe_files(self, files: Sequence[StoredFile]) -> None:
        if not files:
            return
        statement = self.psycopg.sql.SQL(
            "INSERT INTO {} (file_id, path, duration_s, mtime_ns) VALUES (%s, %s, %s, %s) ON CONFLICT (file_id) "
            "DO UPDATE SET path = excluded.path, duration_s = excluded.duration_s, mtime_ns = excluded.mtime_ns"
        ).format(self._files)
        with self._connection() as connection, connection.transaction(), connection.cursor() as cursor:
            cursor.executemany(statement, [(f.file_id, f.path, f.duration_s, f.mtime_ns) for f in files])

    def search(
        self,
        vector: np.ndarray,
        k: int,
        *,
        file_ids: Collection[int] | None = None,
        rule: FileFilter | None = None,
        exact: bool = False,
    ) -> list[Candidate]:
        if file_ids is not None and not file_ids:
            return []
        sql = self.psycopg.sql
        query = vector_text(vector)
        clauses, values = _filter_clauses(file_ids, rule)
        join = sql.SQL(" JOIN {} f ON f.file_id = w.file_id").format(self._files) if rule is not None else sql.SQL("")
        where = sql.SQL(" WHERE " + " AND ".join(clauses)) if clauses else sql.SQL("")
        statement = sql.SQL(
            "SELECT w.id, w.file_id, w.start_s, w.end_s, w.embedding::real[], (w.embedding <#> %s::vector) AS d "
            "FROM {} w{}{} ORDER BY d LIMIT %s"
        ).format(self._windows, join, where)
        with self._connection() as connection, connection.transaction():
            if exact or clauses:
                connection.execute("SET LOCAL enable_indexscan = off")
            else:
                connection.execute(
                    self.psycopg.sql.SQL("SET LOCAL hnsw.ef_search = {}").format(
                        sql.Literal(min(EF_SEARCH_RANGE[1], max(self.ef_search, 2 * k)))
                    )
                )
            found = connection.execute(statement, (query, *values, k)).fetchall()
        return [
            Candidate(int(i), int(f), float(s), float(e), -float(d), np.asarray(v, dtype=np.float32))
            for i, f, s, e, v, d in found
        ]

    def windows_of(self, file_ids: Sequence[int]) -> WindowRows:
        statement = self.psycopg.sql.SQL(
            "SELECT id, file_id, start_s, end_s, embedding::real[] FROM {} WHERE file_id = ANY(%s) ORDER BY id"
        ).format(self._windows)
        with self._connection() as connection:
            found = connection.execute(statement, ([int(f) for f in file_ids],)).fetchall()
        if not found:
            return WindowRows.concat([], self.dim)
        ids, files, starts, ends, vectors = zip(*found)
        return WindowRows(
            np.array(ids, dtype=np.int64),
            np.array(files, dtype=np.int64),
            np.array(starts, dtype=np.float64),
            np.array(ends, dtype=np.float64),
            np.array(vectors, dtype=np.float32),
        )

    def has_ann_index(self) -> bool:
        with self._connection() as connection:
            row = connection.execute("SELECT to_regclass(%s)", (f"{self.collection}_hnsw",)).fetchone()
        return row is not None and row[0] is not None

    def optimize(self, ann_threshold: int) -> None:
        """Build the HNSW index once ``ann_threshold`` windows are stored (PostgreSQL keeps it up to
        date from then on), and refresh the planner's statistics."""
        sql = self.psycopg.sql
        rows = self.count()
        with self._connection() as connection:
            if rows >= ann_threshold and rows > 0 and not self.has_ann_index():
                connection.execute(
                    sql.SQL(
                        "CREATE INDEX IF NOT EXISTS {} ON {} USING hnsw (embedding vector_ip_ops) "
                        "WITH (m = {}, ef_construction = {})"
                    ).format(self._hnsw, self._windows, sql.Literal(HNSW_M), sql.Literal(HNSW_EF_CONSTRUCTION))
                )
            connection.execute(sql.SQL("ANALYZE {}").format(self._windows))

    def drop_collection(self) -> None:
        """Remove this collection's tables and record (tests, and moving an index elsewhere)."""
        sql = self.psycopg.sql
        with self._connection() as connection, connection.transaction():
            connection.execute(sql.SQL("DROP TABLE IF EXISTS {}, {}").format(self._windows, self._files))
            connection.execute("DELETE FROM soundsift_collections WHERE name = %s", (self.collection,))

    def close(self) -> None:
        self._pool.close()


def _filter_clauses(file_ids: Collection[int] | None, rule: FileFilter | None) -> tuple[list[str], list[Any]]:
    """SQL conditions (with %s placeholders) and their values, over ``w`` (windows) and ``f`` (files)."""
    clauses, values = list[str](), list[Any]()
    if file_ids is not None:
        clauses.append("w.file_id = ANY(%s)")
        values.append([int(file_id) for file_id in file_ids])
    if rule is None:
        return clauses, values
    for column, operator, value in (
        ("f.duration_s", ">=", rule.min_duration_s),
        ("f.duration_s", "<=", rule.max_duration_s),
        ("f.mtime_ns", ">=", None if rule.modified_after is None else int(rule.modified_after * 1e9)),
        ("f.mtime_ns", "<=", None if rule.modified_before is None else int(rule.modified_before * 1e9)),
    ):
        if value is not None:
            clauses.append(f"{column} {operator} %s")
            values.append(value)
    if rule.path_glob is not None:
        clauses.append("f.path ~ %s")
        values.append(glob_regex(rule.path_glob))
    return clauses, values


def _reason(error: BaseException) -> str:
    """The server's or libpq's message, first line, with any password in a URL it quotes removed."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return re.sub(r"(://[^:/@\s]+):[^@\s]*@", r"\1@", text)
