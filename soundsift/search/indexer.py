"""An indexing run: which files to (re)embed, which are gone, and writing the outcomes so that an
interrupted run loses nothing finished and leaves nothing half-written (see soundsift.search.catalog).
"""

from __future__ import annotations

import os
import sqlite3
import stat
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from soundsift.core.files import FolderWalk, discover_inputs, walk_folder
from soundsift.search.catalog import Catalog
from soundsift.search.embedding import FileTask, FileVectors
from soundsift.search.errors import PathNotAllowedError
from soundsift.search.results import FileProblem, IndexReport
from soundsift.search.stores import WINDOW_ID_SPAN, StoredFile, VectorStore, WindowRows

# A run writes to the store at least this often, so an interrupted run keeps what it finished.
FLUSH_WINDOWS = 4096
FLUSH_SECONDS = 10.0


@dataclass
class Plan:
    """What a run has to do: ``tasks`` to embed (with why: new, changed, resumed or retried),
    files proven gone from disk to drop, problems found before any decoding, and the folders that
    could not be read (whose indexed files are kept)."""

    tasks: list[FileTask] = field(default_factory=list)
    kinds: dict[int, str] = field(default_factory=dict)
    stats: dict[int, tuple[int, int]] = field(default_factory=dict)
    unchanged: int = 0
    seen: int = 0
    gone: list[int] = field(default_factory=list)
    problems: list[FileProblem] = field(default_factory=list)
    unreadable: list[FileProblem] = field(default_factory=list)
    folders: list[str] = field(default_factory=list)


def is_under(path: str, roots: Sequence[Path]) -> bool:
    real = Path(path)
    return any(real == root or real.is_relative_to(root) for root in roots)


def plan_run(
    catalog: Catalog, inputs: Sequence[str], *, retry_failed: bool = False, allowed_roots: Sequence[Path] | None = None
) -> Plan:
    """Compare the files under ``inputs`` with the catalogue. Paths are resolved (symlinks
    followed); with ``allowed_roots`` every input and every file found must resolve inside one."""
    plan = Plan()
    if allowed_roots is not None:
        for item in inputs:
            if not is_under(os.path.realpath(item), allowed_roots):
                raise PathNotAllowedError(f"{item!r} is outside the library folders this server may index")
    plan.folders = [os.path.realpath(item) for item in inputs if os.path.isdir(item)]
    walks = [walk_folder(folder) for folder in plan.folders]
    named = [item for item in inputs if not os.path.isdir(item)]
    found: dict[str, None] = {}
    for candidate in [path for walk in walks for path in walk.files] + discover_inputs(named):
        real = os.path.realpath(candidate)
        if allowed_roots is not None and not is_under(real, allowed_roots):
            plan.problems.append(
                FileProblem(path=candidate, error="path_not_allowed", message="resolves outside the library folders")
            )
            continue
        found[real] = None
    for walk in walks:
        for folder, reason in walk.unreadable.items():
            message = f"cannot list this folder ({reason}); what the index holds under it is kept"
            plan.unreadable.append(FileProblem(path=folder, error="folder_unreadable", message=message))
    for path in found:
        _plan_file(catalog, plan, path, retry_failed)
    plan.gone = _gone(catalog, walks, found, named)
    return plan


def _plan_file(catalog: Catalog, plan: Plan, path: str, retry_failed: bool) -> None:
    try:
        info = os.stat(path)
    except OSError as error:
        kept = "; what the index holds of it is kept" if catalog.get(path) is not None else ""
        plan.problems.append(
            FileProblem(path=path, error="file_unreadable", message=f"cannot read ({error.strerror}){kept}")
        )
        return
    if not stat.S_ISREG(info.st_mode):
        plan.problems.append(FileProblem(path=path, error="audio_decode_error", message="not a regular file"))
        return
    plan.seen += 1
    size, mtime_ns = info.st_size, info.st_mtime_ns
    row = catalog.get(path)
    same_stat = row is not None and row.size == size and row.mtime_ns == mtime_ns
    if row is not None and row.status != "pending" and same_stat and not (row.status == "failed" and retry_failed):
        plan.unchanged += 1
        return
    if row is None:
        kind, known = "added", None
    elif row.status == "pending":
        kind, known = "resumed", None
    elif row.status == "indexed" and not same_stat:
        kind, known = "changed", row.sha256  # the hash decides whether it really changed
    else:
        kind, known = "changed", None  # a failed file that changed, or is retried
    file_id = catalog.begin(path, size, mtime_ns)
    plan.tasks.append(FileTask(file_id, path, known))
    plan.kinds[file_id] = kind
    plan.stats[file_id] = (size, mtime_ns)


def _gone(catalog: Catalog, walks: Sequence[FolderWalk], found: dict[str, None], named: Sequence[str]) -> list[int]:
    """Catalogued files proven gone: inside a folder walked whose listing lacks them, or given by
    name and reported missing by the file system. An unreadable folder proves nothing."""
    gone: dict[int, None] = {}
    for walk in walks:
        for file_id, path in catalog.paths_under(walk.root):
            if path not in found and walk.proves_gone(path):
                gone[file_id] = None
    for item in named:
        row = catalog.get(os.path.realpath(item))
        if row is not None and _missing(row.path):
            gone[row.id] = None
    return list(gone)


def _missing(path: str) -> bool:
    """True only when the file system says there is no such file (not for permission errors)."""
    try:
        os.stat(path)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return False


class Writer:
    """Outcomes to the store and the catalogue, in flushes: each flush first deletes every stored
    window of its files (stale ones of a changed file, partial ones of an interrupted run), adds the
    new windows, then marks the files done in one catalogue transaction."""

    def __init__(self, catalog: Catalog, store: VectorStore, plan: Plan, report: IndexReport, dim: int) -> None:
        self.catalog, self.store, self.plan, self.report, self.dim = catalog, store, plan, report, dim
        self._rows: list[WindowRows] = []
        self._done: list[FileVectors] = []
        self._windows = 0
        self._last_flush = time.monotonic()

    def accept(self, outcome: FileVectors) -> None:
        task = outcome.task
        if outcome.unchanged:
            size, mtime_ns = self.plan.stats[task.file_id]
            self.catalog.touch(task.file_id, size, mtime_ns)
            if self.store.holds_files and (row := self.catalog.get_by_id(task.file_id)) is not None:
                self.store.describe_files([StoredFile(task.file_id, task.path, row.duration_s, mtime_ns)])
            self.report.touched += 1
            return
        self._done.append(outcome)
        if outcome.error is None and outcome.vectors:  # a file the silence gate kept whole has none
            count = len(outcome.vectors)
            self._rows.append(
                WindowRows(
                    ids=task.file_id * WINDOW_ID_SPAN + np.arange(count, dtype=np.int64),
                    file_ids=np.full(count, task.file_id, dtype=np.int64),
                    starts=np.round(np.asarray(outcome.starts, dtype=np.float64), 4),
                    ends=np.round(np.asarray(outcome.ends, dtype=np.float64), 4),
                    vectors=np.stack(outcome.vectors).astype(np.float32),
                )
            )
            self._windows += count
        if self._windows >= FLUSH_WINDOWS or time.monotonic() - self._last_flush >= FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        if not self._done:
            return
        done, rows = self._done, WindowRows.concat(self._rows, self.dim)
        self.store.delete_files([outcome.task.file_id for outcome in done])
        self.store.add(rows)
        if self.store.holds_files:
            self.store.describe_files(
                [
                    StoredFile(o.task.file_id, o.task.path, o.duration_s, self.plan.stats[o.task.file_id][1])
                    for o in done
                    if o.error is None
                ]
            )
        with self.catalog.transaction() as db:
            for outcome in done:
                self._record(db, outcome)
        self._done, self._rows, self._windows = [], [], 0
        self._last_flush = time.monotonic()

    def _record(self, db: sqlite3.Connection, outcome: FileVectors) -> None:
        task, report = outcome.task, self.report
        if outcome.error is not None:
            self.catalog.mark_failed(db, task.file_id, outcome.sha256, outcome.error.code, _message(outcome))
            report.failed.append(FileProblem(path=task.path, error=outcome.error.code, message=_message(outcome)))
            return
        size, mtime_ns = self.plan.stats[task.file_id]
        assert outcome.sha256 is not None
        windows = len(outcome.vectors)
        self.catalog.mark_indexed(db, task.file_id, outcome.sha256, outcome.duration_s, windows, size, mtime_ns)
        kind = self.plan.kinds[task.file_id]
        setattr(report, kind, getattr(report, kind) + 1)
        report.windows_added += windows
        report.windows_gated += outcome.gated
        report.audio_s += outcome.duration_s

    def remove_gone(self) -> None:
        if not self.plan.gone:
            return
        self.store.delete_files(self.plan.gone)
        with self.catalog.transaction() as db:
            self.catalog.remove(db, self.plan.gone)
        self.report.removed += len(self.plan.gone)


def _message(outcome: FileVectors) -> str:
    """The error's message without the path in front (the path is its own field)."""
    assert outcome.error is not None
    text = str(outcome.error)
    return text.removeprefix(f"{outcome.error.source}: ") if outcome.error.source else text
