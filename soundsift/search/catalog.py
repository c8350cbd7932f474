"""The index folder's catalogue: one SQLite file with the manifest and one row per file.

The catalogue is small (a row per file, never per window) and always local, whichever store holds
the vectors; it is what makes indexing incremental and resumable:

- a file is ``pending`` from the moment its vectors may be written until they all are; a run that
  is interrupted leaves it pending, and the next run deletes whatever of it reached the store and
  does it again, so a file is never half in the index;
- ``indexed`` files are skipped while their size and modified time stay the same; when those
  change the content hash decides (a touched file is not embedded again);
- ``failed`` files keep their error code and message and are retried when they change (or with
  ``retry_failed``).
"""

from __future__ import annotations

import fnmatch
import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from soundsift.search.errors import IndexCorruptError

CATALOG_NAME = "catalog.sqlite"
FORMAT_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS files (
    id INTEGER PRIMARY KEY,
    path TEXT UNIQUE NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    sha256 TEXT,
    status TEXT NOT NULL CHECK (status IN ('pending', 'indexed', 'failed')),
    error_code TEXT,
    error_message TEXT,
    duration_s REAL,
    windows INTEGER NOT NULL DEFAULT 0,
    indexed_at REAL
);
CREATE INDEX IF NOT EXISTS files_status ON files (status);
"""


@dataclass(frozen=True)
class FileRow:
    id: int
    path: str
    size: int
    mtime_ns: int
    sha256: str | None
    status: str
    error_code: str | None
    error_message: str | None
    duration_s: float | None
    windows: int


@dataclass(frozen=True)
class FileFilter:
    """Which files a search may return; None fields do not filter."""

    path_glob: str | None = None
    min_duration_s: float | None = None
    max_duration_s: float | None = None
    modified_after: float | None = None
    modified_before: float | None = None

    @property
    def active(self) -> bool:
        return any(
            value is not None
            for value in (
                self.path_glob,
                self.min_duration_s,
                self.max_duration_s,
                self.modified_after,
                self.modified_before,
            )
        )


class Catalog:
    """The SQLite catalogue of one index folder; safe to share between threads (one lock)."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / CATALOG_NAME
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as error:
            raise IndexCorruptError(f"{self.path} is not a soundsift catalogue ({error})") from None
        self._lock = threading.RLock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # ---- manifest -----------------------------------------------------------------------------

    def manifest(self) -> dict[str, Any]:
        with self._lock:
            rows = self._db.execute("SELECT key, value FROM meta").fetchall()
        return {key: json.loads(value) for key, value in rows}

    def set_manifest(self, values: dict[str, Any]) -> None:
        with self.transaction() as db:
            db.executemany(
                "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                [(key, json.dumps(value)) for key, value in values.items()],
            )

    # ---- files --------------------------------------------------------------------------------

    def get(self, path: str) -> FileRow | None:
        with self._lock:
            row = self._db.execute(f"SELECT {_COLUMNS} FROM files WHERE path = ?", (path,)).fetchone()
        return FileRow(*row) if row else None

    def get_by_id(self, file_id: int) -> FileRow | None:
        with self._lock:
            row = self._db.execute(f"SELECT {_COLUMNS} FROM files WHERE id = ?", (file_id,)).fetchone()
        return FileRow(*row) if row else None

    def rows(self, status: str | None = None) -> list[FileRow]:
        query = f"SELECT {_COLUMNS} FROM files" + (" WHERE status = ?" if status else "") + " ORDER BY id"
        with self._lock:
            return [FileRow(*row) for row in self._db.execute(query, (status,) if status else ())]

    def rows_by_id(self, ids: Iterable[int]) -> dict[int, FileRow]:
        wanted = sorted(set(ids))
        found: dict[int, FileRow] = {}
        with self._lock:
            for start in range(0, len(wanted), 500):  # SQLite's bound-parameter limit
                chunk = wanted[start : start + 500]
                marks = ",".join("?" * len(chunk))
                for row in self._db.execute(f"SELECT {_COLUMNS} FROM files WHERE id IN ({marks})", chunk):
                    found[row[0]] = FileRow(*row)
        return found

    def begin(self, path: str, size: int, mtime_ns: int) -> int:
        """Mark a file pending (new, changed or unfinished) and return its id."""
        with self.transaction() as db:
            existing = db.execute("SELECT id FROM files WHERE path = ?", (path,)).fetchone()
            if existing:
                db.execute(
                    "UPDATE files SET status = 'pending', size = ?, mtime_ns = ?, error_code = NULL, "
                    "error_message = NULL WHERE id = ?",
                    (size, mtime_ns, existing[0]),
                )
                return int(existing[0])
            cursor = db.execute(
                "INSERT INTO files (path, size, mtime_ns, status) VALUES (?, ?, ?, 'pending')", (path, size, mtime_ns)
            )
            return int(cursor.lastrowid or 0)

    def mark_indexed(
        self,
        db: sqlite3.Connection,
        file_id: int,
        sha256: str,
        duration_s: float,
        windows: int,
        size: int,
        mtime_ns: int,
    ) -> None:
        db.execute(
            "UPDATE files SET status = 'indexed', sha256 = ?, duration_s = ?, windows = ?, size = ?, mtime_ns = ?, "
            "error_code = NULL, error_message = NULL, indexed_at = ? WHERE id = ?",
            (sha256, duration_s, windows, size, mtime_ns, time.time(), file_id),
        )

    def mark_failed(self, db: sqlite3.Connection, file_id: int, sha256: str | None, code: str, message: str) -> None:
        db.execute(
            "UPDATE files SET status = 'failed', sha256 = ?, error_code = ?, error_message = ?, windows = 0, "
            "duration_s = NULL, indexed_at = ? WHERE id = ?",
            (sha256, code, message, time.time(), file_id),
        )

    def touch(self, file_id: int, size: int, mtime_ns: int) -> None:
        """The file's stat changed but its content did not: keep it, remember the new stat."""
        with self.transaction() as db:
            db.execute(
                "UPDATE files SET status = 'indexed', size = ?, mtime_ns = ? WHERE id = ?", (size, mtime_ns, file_id)
            )

    def remove(self, db: sqlite3.Connection, file_ids: Sequence[int]) -> None:
        db.executemany("DELETE FROM files WHERE id = ?", [(file_id,) for file_id in file_ids])

    def paths_under(self, folder: str) -> list[tuple[int, str]]:
        """(id, path) of every file in the catalogue inside ``folder`` (a resolved path)."""
        prefix = folder.rstrip("/") + "/"
        with self._lock:
            rows = self._db.execute(
                "SELECT id, path FROM files WHERE substr(path, 1, ?) = ?", (len(prefix), prefix)
            ).fetchall()
        return [(int(file_id), str(path)) for file_id, path in rows]

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT status, COUNT(*) FROM files GROUP BY status").fetchall()
        return {status: int(count) for status, count in rows}

    def totals(self) -> tuple[int, float]:
        """(windows, seconds of audio) of the indexed files."""
        with self._lock:
            windows, seconds = self._db.execute(
                "SELECT COALESCE(SUM(windows), 0), COALESCE(SUM(duration_s), 0) FROM files WHERE status = 'indexed'"
            ).fetchone()
        return int(windows), float(seconds)

    def failures(self, limit: int = 100) -> list[FileRow]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM files WHERE status = 'failed' ORDER BY path LIMIT ?", (limit,)
            ).fetchall()
        return [FileRow(*row) for row in rows]

    def matching_ids(self, rule: FileFilter) -> set[int]:
        """Ids of the indexed files a filter lets through (the catalogue holds one row per file,
        so this is a scan of files, never of windows)."""
        clauses, values = ["status = 'indexed'"], list[Any]()
        for column, operator, value in (
            ("duration_s", ">=", rule.min_duration_s),
            ("duration_s", "<=", rule.max_duration_s),
            ("mtime_ns", ">=", None if rule.modified_after is None else int(rule.modified_after * 1e9)),
            ("mtime_ns", "<=", None if rule.modified_before is None else int(rule.modified_before * 1e9)),
        ):
            if value is not None:
                clauses.append(f"{column} {operator} ?")
                values.append(value)
        with self._lock:
            rows = self._db.execute(f"SELECT id, path FROM files WHERE {' AND '.join(clauses)}", values).fetchall()
        if rule.path_glob is None:
            return {int(file_id) for file_id, _ in rows}
        return {int(file_id) for file_id, path in rows if path_matches(path, rule.path_glob)}


def path_matches(path: str, pattern: str) -> bool:
    """Shell-style: ``*`` also crosses folders; a pattern not starting at the root may match any tail."""
    return fnmatch.fnmatchcase(path, pattern) or (
        not pattern.startswith(("/", "*")) and fnmatch.fnmatchcase(path, "*/" + pattern)
    )


_COLUMNS = "id, path, size, mtime_ns, sha256, status, error_code, error_message, duration_s, windows"


def glob_regex(pattern: str) -> str:
    """``path_matches`` as one POSIX regular expression (for stores that filter paths themselves,
    e.g. PostgreSQL's ``~``): ``*`` is ``.*``, ``?`` one character, ``[...]`` and ``[!...]`` sets;
    a pattern not starting at the root (or with ``*``) may also match any tail after a ``/``."""
    out, i = [], 0
    while i < len(pattern):
        char = pattern[i]
        i += 1
        if char == "*":
            out.append(".*")
        elif char == "?":
            out.append(".")
        elif char == "[":
            end = i + (1 if i < len(pattern) and pattern[i] in "!]" else 0)
            end = pattern.find("]", end + (1 if end < len(pattern) and pattern[end] == "]" else 0))
            if end < 0:
                out.append(r"\[")
                continue
            body = pattern[i:end]
            i = end + 1
            negate = body.startswith("!")
            body = body[1:] if negate else body
            body = body.replace("\\", "\\\\")
            out.append("[" + ("^" if negate else "") + body + "]")
        else:
            out.append("\\" + char if not char.isalnum() and char not in "/_- " else char)
    body = "".join(out)
    if pattern.startswith(("/", "*")):
        return f"^{body}$"
    return f"^(.*/)?{body}$"
