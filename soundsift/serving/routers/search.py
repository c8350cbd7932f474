"""POST /api/search, GET /api/index/status, POST /api/index, GET /api/search/files/{id}.

The server searches one index folder (``search_index``) with its own model; indexing runs as one
background job at a time, only over paths that resolve inside the configured ``library_roots``.
Search goes through admission like every model route; the job embeds on its own thread with the
first replica, one decoding worker, so it cannot starve requests of more than one core's decoding.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, FastAPI, File, Form, Request, UploadFile
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field

from soundsift.core.text import check_text
from soundsift.search import IndexReport, IndexStatus, Library, SearchResult
from soundsift.search.indexer import is_under
from soundsift.serving.dependencies import ADAPTER_HELP, Service, upload_of
from soundsift.serving.errors import ApiError, ErrorBody
from soundsift.serving.service import ClassificationService

router = APIRouter(prefix="/api", tags=["search"])
_ERRORS = {
    403: "Path outside the library roots, or indexing over HTTP is off (path_not_allowed, indexing_disabled)",
    404: "No search index configured, no index yet, or no such file (search_not_configured, index_not_found, "
    "path_not_found, not_found)",
    409: "An indexing job is running, or the index was built with another model (index_busy, index_model_mismatch)",
}
SEARCH_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": description} for status, description in _ERRORS.items()
}
MAX_INDEX_PATHS = 100
MAX_QUERY_CHARS = 500


class IndexRequest(BaseModel):
    paths: list[str] = Field(
        min_length=1, max_length=MAX_INDEX_PATHS, description="Files or folders inside the library roots."
    )
    retry_failed: bool = Field(default=False, description="Try files that failed before again.")


class IndexJob(BaseModel):
    state: Literal["idle", "running", "finished", "failed", "stopped"]
    paths: list[str] = Field(default_factory=list)
    done: int = Field(default=0, description="Files finished in this run.")
    total: int = Field(default=0, description="Files this run has to embed (new, changed or unfinished).")
    started_at: float | None = None
    finished_at: float | None = None
    report: IndexReport | None = None
    error: str | None = None


class IndexStatusResponse(BaseModel):
    index: IndexStatus
    job: IndexJob
    library_roots: list[str] = Field(description="Where POST /api/index may read; empty: indexing over HTTP is off.")


class SearchState:
    """The server's library and its one indexing job."""

    def __init__(self, service: ClassificationService) -> None:
        self.service = service
        folder = service.settings.search_index
        self.library = Library(folder, classifier=service.classifier) if folder else None
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

    def start(self, paths: list[str], retry_failed: bool) -> IndexJob:
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
                target=self._run, args=(library, resolved, retry_failed, roots), name="soundsift-index", daemon=True
            )
            self._thread.start()
            return self.job

    def _run(self, library: Library, paths: list[str], retry_failed: bool, roots: list[Path]) -> None:
        def progress(done: int, total: int) -> None:
            self.job.done, self.job.total = done, total

        try:
            report = library.add(
                paths, workers=1, retry_failed=retry_failed, progress=progress, stop=self.stop, allowed_roots=roots
            )
            self.job.report = report
            self.job.state = "stopped" if report.interrupted else "finished"
        except Exception as error:  # the job's outcome is its status, never a dead thread
            self.job.state, self.job.error = "failed", str(error)[:1000]
        finally:
            self.job.finished_at = time.time()

    def shutdown(self, timeout_s: float = 10.0) -> None:
        """Stop the job: finished files are kept, the rest is redone by the next run."""
        self.stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)


def install(app: FastAPI, service: ClassificationService) -> None:
    app.state.search = SearchState(service)


def _state(request: Request) -> SearchState:
    state: SearchState = request.app.state.search
    return state


@router.post(
    "/search",
    response_model=SearchResult,
    summary="Search the index by description or example sound",
    responses=SEARCH_RESPONSES,
)
async def search(
    request: Request,
    service: Service,
    query: Annotated[str | None, Form(description="What to find, in words ('-music' excludes a sound).")] = None,
    audio: Annotated[UploadFile | None, File(description="An example sound instead of words.")] = None,
    start_s: Annotated[float | None, Form(ge=0, description="Use the example from here (seconds).")] = None,
    end_s: Annotated[float | None, Form(gt=0, description="...to here.")] = None,
    top: Annotated[int, Form(ge=1, le=200)] = 20,
    exclude: Annotated[list[str] | None, Form(description="Sounds hits must not be; repeatable.")] = None,
    path_glob: Annotated[str | None, Form(max_length=300)] = None,
    min_duration_s: Annotated[float | None, Form(ge=0)] = None,
    max_duration_s: Annotated[float | None, Form(ge=0)] = None,
    modified_after: Annotated[float | None, Form(description="Unix time.")] = None,
    modified_before: Annotated[float | None, Form(description="Unix time.")] = None,
    adapter: Annotated[str | None, Form(description=ADAPTER_HELP)] = None,
) -> SearchResult:
    library = _state(request).require_library()
    if (query is None or not query.strip()) == (audio is None):
        raise ApiError(422, "invalid_query", "send 'query' (words) or 'audio' (an example), one of the two")
    if query is not None:
        if len(query) > MAX_QUERY_CHARS:
            raise ApiError(
                422, "text_too_long", f"the query is {len(query)} characters; the limit is {MAX_QUERY_CHARS}"
            )
        check_text(query, "query")
    for word in exclude or []:
        check_text(word, "exclude")
    example = upload_of(audio) if audio is not None else None
    options: dict[str, Any] = {
        "top": top,
        "exclude": [word for word in exclude or [] if word.strip()][:20],
        "path_glob": path_glob,
        "min_duration_s": min_duration_s,
        "max_duration_s": max_duration_s,
        "modified_after": modified_after,
        "modified_before": modified_before,
    }
    if adapter:
        options["adapter"] = service.adapters.get(adapter)
    if example is not None:
        options.update(like=example.file, like_name=example.name, like_start_s=start_s, like_end_s=end_s)
    async with service.admit():
        return await service.in_worker_pool(library.search, query if example is None else None, **options)


@router.get(
    "/index/status",
    response_model=IndexStatusResponse,
    summary="What the index holds, and the indexing job",
    responses=SEARCH_RESPONSES,
)
async def index_status(request: Request, service: Service) -> IndexStatusResponse:
    state = _state(request)
    library = state.require_library()
    status = await asyncio.get_running_loop().run_in_executor(None, library.status)
    return IndexStatusResponse(
        index=status,
        job=state.job,
        library_roots=[str(root) for root in service.settings.library_root_paths],
    )


@router.post(
    "/index",
    response_model=IndexJob,
    status_code=202,
    summary="Index files inside the library roots",
    responses=SEARCH_RESPONSES,
)
async def start_index(request: Request, body: IndexRequest) -> IndexJob:
    """Starts a background job (one at a time; 409 while one runs); follow it at GET /api/index/status."""
    return _state(request).start(body.paths, body.retry_failed)


@router.get(
    "/search/files/{file_id}", summary="The audio of an indexed file (for playing a hit)", responses=SEARCH_RESPONSES
)
async def indexed_file(request: Request, file_id: int) -> FileResponse:
    """Only files in the index, by id, and only while the path still resolves to itself (a symlink
    swapped in after indexing is refused)."""
    library = _state(request).require_library()
    path = library.file_path(file_id)
    if path is None or os.path.realpath(path) != path or not os.path.isfile(path):
        raise ApiError(404, "not_found", f"no indexed file {file_id}")
    return FileResponse(path, filename=Path(path).name, content_disposition_type="inline")
