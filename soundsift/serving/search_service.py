"""The server's search: one index folder (``search_index``) searched with the served model it was
built with (the default model for a new index), and one background indexing job at a time over paths
inside ``library_roots``.

The app factory creates the one `SearchService` and hands it to the /api/search router and the
page's search tab. Searches go through admission like every model route; the job embeds on its own
thread with one decoding worker, its model calls taking the engine's queue like everyone's.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from soundsift.core.text import check_text
from soundsift.search import IndexReport, Library, SearchResult
from soundsift.search.indexer import is_under
from soundsift.serving.errors import ApiError
from soundsift.serving.service import ClassificationService, ServedModel


class IndexJob(BaseModel):
    state: Literal["idle", "running", "finished", "failed", "stopped"]
    paths: list[str] = Field(default_factory=list)
    done: int = Field(default=0, description="Files finished in this run.")
    total: int = Field(default=0, description="Files this run has to embed (new, changed or unfinished).")
    started_at: float | None = None
    finished_at: float | None = None
    report: IndexReport | None = None
    error: str | None = None


class SearchService:
    """The server's library and its one indexing job."""

    def __init__(self, service: ClassificationService) -> None:
        self.service = service
        folder = service.settings.search_index
        self.model = _index_model(service, folder) if folder else service.default
        self.library = Library(folder, classifier=self.model.classifier) if folder else None
        self.job = IndexJob(state="idle")
        self.stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def require_library(self) -> Library:
        if self.library is None:
            raise ApiError(
                404, "search_not_configured", "this server has no search index: start it with --search-index DIR"
            )
        return self.library

    def check_model(self, model: str | None) -> None:
        """A request naming a model must name the index's (409 otherwise: vectors of two models cannot
        be compared)."""
        if model and self.service.served(model) is not self.model:
            raise ApiError(
                409,
                "index_model_mismatch",
                f"the index was built with {self.model.name}; search it with model={self.model.name}",
            )

    async def search(self, query: str | None, **options: Any) -> SearchResult:
        """`Library.search` under admission, on the worker pool (its model calls take the engine)."""
        library = self.require_library()
        async with self.service.admit():
            return await self.service.in_worker_pool(library.search, query, **options)

    def start(self, paths: list[str], retry_failed: bool, min_dbfs: float | None = None) -> IndexJob:
        library = self.require_library()
        roots = self.service.settings.library_root_paths
        if not roots:
            raise ApiError(
                403, "indexing_disabled", "indexing over HTTP is off: start the server with --library-roots DIR"
            )
        resolved = []
        for path in paths:
            check_text(path, "path")
            real = os.path.realpath(path)  # symlinks followed, '..' collapsed, before any check
            if not os.path.isabs(path) or not is_under(real, roots):
                raise ApiError(403, "path_not_allowed", f"{path[:300]!r} is not inside the library roots")
            if not os.path.exists(real):
                raise ApiError(404, "path_not_found", f"{path[:300]!r} does not exist")
            resolved.append(real)
        with self._lock:
            if self.job.state == "running":
                raise ApiError(409, "index_busy", "an indexing job is running; see GET /api/index/status")
            self.stop.clear()
            self.job = IndexJob(state="running", paths=resolved, started_at=time.time())
            self._thread = threading.Thread(
                target=self._run,
                args=(library, resolved, retry_failed, min_dbfs, roots),
                name="soundsift-index",
                daemon=True,
            )
            self._thread.start()
            return self.job

    def _run(
        self, library: Library, paths: list[str], retry_failed: bool, min_dbfs: float | None, roots: list[Path]
    ) -> None:
        def progress(done: int, total: int) -> None:
            self.job.done, self.job.total = done, total

        try:
            report = library.add(
                paths,
                workers=1,
                retry_failed=retry_failed,
                progress=progress,
                stop=self.stop,
                allowed_roots=roots,
                min_dbfs=min_dbfs,
            )
            self.job.report = report
            self.job.state = "stopped" if report.interrupted else "finished"
        except Exception as error:  # the job's outcome is its status, never a dead thread
            self.job.state, self.job.error = "failed", str(error)[:1000]
        finally:
            self.job.finished_at = time.time()

    def cancel(self) -> IndexJob:
        """Ask the running job to stop (finished files are kept, the rest indexed by the next run);
        its state becomes "stopped" once the files in flight are written."""
        with self._lock:
            if self.job.state != "running":
                raise ApiError(409, "no_index_job", "no indexing job is running; see GET /api/index/status")
            self.stop.set()
            return self.job

    def shutdown(self, timeout_s: float = 10.0) -> None:
        """Stop the job: finished files are kept, the rest is redone by the next run."""
        self.stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)


def _index_model(service: ClassificationService, folder: str) -> ServedModel:
    """The served model an existing index was built with (by checkpoint id; its fingerprint is checked
    when the index opens), else the default model."""
    manifest = Library(folder).manifest()
    if manifest is not None:
        for served in service.models.values():
            if served.classifier.model_id == manifest.model:
                return served
    return service.default
