"""POST /api/search, GET /api/index/status, POST /api/index, GET /api/search/files/{id}: the HTTP
face of the server's `SearchService` (soundsift.serving.search_service)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field

from soundsift.core.audio import GATE_RANGE_DBFS
from soundsift.core.text import check_text
from soundsift.search import IndexStatus, SearchResult
from soundsift.serving.dependencies import ADAPTER_HELP, RUNS_MODEL, Service, upload_of
from soundsift.serving.errors import ApiError, ErrorBody
from soundsift.serving.search_service import IndexJob, SearchService

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
    min_dbfs: float | None = Field(
        default=None,
        ge=GATE_RANGE_DBFS[0],
        le=GATE_RANGE_DBFS[1],
        description="Silence gate: windows quieter than this RMS level (dBFS) are neither embedded nor stored.",
    )


class IndexStatusResponse(BaseModel):
    index: IndexStatus
    job: IndexJob
    library_roots: list[str] = Field(description="Where POST /api/index may read; empty: indexing over HTTP is off.")


def get_search(request: Request) -> SearchService:
    search: SearchService = request.app.state.search
    return search


Search = Annotated[SearchService, Depends(get_search)]


@router.post(
    "/search",
    response_model=SearchResult,
    summary="Search the index by description or example sound",
    responses=SEARCH_RESPONSES,
    dependencies=[RUNS_MODEL],
)
async def search(
    service: Service,
    search_service: Search,
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
    model: Annotated[
        str | None, Form(max_length=500, description="A served model; must be the one the index was built with.")
    ] = None,
) -> SearchResult:
    search_service.require_library()
    search_service.check_model(model)
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
    return await search_service.search(query if example is None else None, **options)


@router.get(
    "/index/status",
    response_model=IndexStatusResponse,
    summary="What the index holds, and the indexing job",
    responses=SEARCH_RESPONSES,
)
async def index_status(service: Service, search_service: Search) -> IndexStatusResponse:
    library = search_service.require_library()
    status = await asyncio.get_running_loop().run_in_executor(None, library.status)
    return IndexStatusResponse(
        index=status,
        job=search_service.job,
        library_roots=[str(root) for root in service.settings.library_root_paths],
    )


@router.post(
    "/index",
    response_model=IndexJob,
    status_code=202,
    summary="Index files inside the library roots",
    responses=SEARCH_RESPONSES,
)
async def start_index(search_service: Search, body: IndexRequest) -> IndexJob:
    """Starts a background job (one at a time; 409 while one runs); follow it at GET /api/index/status."""
    return search_service.start(body.paths, body.retry_failed, body.min_dbfs)


@router.delete(
    "/index/job", response_model=IndexJob, summary="Stop the running indexing job", responses=SEARCH_RESPONSES
)
async def stop_index(search_service: Search) -> IndexJob:
    """Stops the job at its next file (409 when none runs): finished files are kept, the rest are
    indexed by the next run. Follow it at GET /api/index/status until its state is "stopped"."""
    return search_service.cancel()


@router.get(
    "/search/files/{file_id}", summary="The audio of an indexed file (for playing a hit)", responses=SEARCH_RESPONSES
)
async def indexed_file(search_service: Search, file_id: int) -> FileResponse:
    """Only files in the index, by id, and only while the path still resolves to itself (a symlink
    swapped in after indexing is refused)."""
    library = search_service.require_library()
    path = library.file_path(file_id)
    if path is None or os.path.realpath(path) != path or not os.path.isfile(path):
        raise ApiError(404, "not_found", f"no indexed file {file_id}")
    return FileResponse(path, filename=Path(path).name, content_disposition_type="inline")
