"""The HTTP API (FastAPI) with the web page mounted at /. A thin layer over ClassificationService."""

from __future__ import annotations

import hmac
import logging
import time
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

import soundsift
from soundsift.batching import QueueFullError
from soundsift.config import Settings
from soundsift.errors import (
    AudioDecodeError,
    AudioTooLongError,
    ConfigurationError,
    EmptyAudioError,
    LabelError,
    NonFiniteAudioError,
    SoundsiftError,
)
from soundsift.presets import preset_labels, preset_names
from soundsift.results import Classification, Detection, FailedInput
from soundsift.service import ClassificationService, elapsed_ms

logger = logging.getLogger("soundsift.server")

API_PREFIX = "/api/"
RETRY_AFTER_S = "1"
LABELS_HELP = (
    "Comma-separated labels ('|' joins synonyms, '(not X)' excludes a sound; Chinese is translated), "
    "or the field repeated once per label."
)
PRESET_HELP = f"A named label set instead of labels: {', '.join(preset_names())}."


class ApiError(Exception):
    """An error answered as ``{"error": {"code", "message"}}`` with an HTTP status."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable machine-readable error name.")
    message: str


class ErrorBody(BaseModel):
    error: ErrorDetail


class ClassifyResponse(Classification):
    elapsed_ms: float = Field(description="Server time for this request, in milliseconds.")


class BatchResponse(BaseModel):
    results: list[Classification | FailedInput] = Field(description="One entry per uploaded file, in order.")
    elapsed_ms: float


class DetectResponse(Detection):
    elapsed_ms: float


class EmbeddingResponse(BaseModel):
    model: str
    dim: int
    embeddings: list[list[float]] = Field(description="L2-normalised vectors, one per input.")


class TextEmbedRequest(BaseModel):
    texts: list[str] = Field(min_length=1, max_length=1000, description="Texts, embedded exactly as given.")


class InfoResponse(BaseModel):
    version: str
    model: str
    devices: list[str]
    backend: str
    sample_rate: int
    ready: bool
    limits: dict[str, float | int]
    defaults: dict[str, float | str | list[str]]


STATUS_BY_ERROR: dict[type[SoundsiftError], int] = {
    AudioDecodeError: 415,
    EmptyAudioError: 422,
    NonFiniteAudioError: 422,
    AudioTooLongError: 422,
    LabelError: 422,
    ConfigurationError: 422,
}

ERROR_RESPONSES = {
    status: {"model": ErrorBody, "description": description}
    for status, description in {
        401: "Missing or wrong API key",
        413: "Upload too large",
        415: "Unsupported or corrupt media",
        422: "Invalid labels, parameters, empty/too long audio",
        503: "Model not ready or queue full (see Retry-After)",
    }.items()
}


def create_app(service: ClassificationService, *, with_ui: bool = True) -> FastAPI:
    settings = service.settings

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        await service.start()
        print(f"Running on local URL: http://{_display_host(settings.host)}:{settings.port}", flush=True)
        print(f"Model {service.classifier.model_id} ready on {', '.join(_devices(service))}", flush=True)
        yield
        await service.stop()

    app = FastAPI(
        title="soundsift",
        version=soundsift.__version__,
        description="Zero-shot audio classification with CLAP. Upload audio and plain-language labels.",
        lifespan=lifespan,
    )
    app.state.service = service
    _install_middleware(app, service)
    _install_error_handlers(app)
    _add_health_routes(app, service)
    _add_api_routes(app, service)
    _add_api_fallback(app)
    if with_ui:
        from soundsift.webui import mount_ui

        mount_ui(app, service)
    return app


def _install_middleware(app: FastAPI, service: ClassificationService) -> None:
    settings = service.settings
    max_bytes = int(settings.max_upload_mb * 1024 * 1024)

    @app.middleware("http")
    async def limits_and_metrics(request: Request, call_next):
        started = time.perf_counter()
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > max_bytes:
            response = _error_response(
                ApiError(
                    413,
                    "upload_too_large",
                    f"the request is {int(declared) / 1e6:.1f} MB; "
                    f"the limit is {settings.max_upload_mb:g} MB (SOUNDSIFT_MAX_UPLOAD_MB)",
                )
            )
        else:
            response = await call_next(request)
        route = request.scope.get("route")
        endpoint = getattr(route, "path", None) or ("/ui" if not request.url.path.startswith("/api") else "other")
        service.metrics.requests.labels(endpoint, str(response.status_code)).inc()
        service.metrics.latency.labels(endpoint, str(response.status_code)).observe(time.perf_counter() - started)
        return response

    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_: Request, error: ApiError) -> JSONResponse:
        return _error_response(error)

    @app.exception_handler(SoundsiftError)
    async def soundsift_error(_: Request, error: SoundsiftError) -> JSONResponse:
        status = next((code for kind, code in STATUS_BY_ERROR.items() if isinstance(error, kind)), 422)
        return _error_response(ApiError(status, error.code, str(error)))

    @app.exception_handler(QueueFullError)
    async def queue_full(_: Request, error: QueueFullError) -> JSONResponse:
        return _error_response(
            ApiError(503, "overloaded", f"the server is busy ({error}); retry shortly", {"Retry-After": RETRY_AFTER_S})
        )

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, error: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in issue['loc'] if p != 'body') or 'body'}: {issue['msg']}"
            for issue in error.errors()
        )
        return _error_response(ApiError(422, "invalid_request", problems))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, error: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code, "http_error")
        return _error_response(ApiError(error.status_code, code, str(error.detail)))

    @app.exception_handler(Exception)
    async def unexpected(_: Request, error: Exception) -> JSONResponse:
        logger.exception("unexpected error")
        return _error_response(ApiError(500, "internal_error", "an unexpected error occurred; see the server log"))


def _error_response(error: ApiError) -> JSONResponse:
    body = {"error": {"code": error.code, "message": error.message}}
    return JSONResponse(body, status_code=error.status, headers=error.headers)


def _add_health_routes(app: FastAPI, service: ClassificationService) -> None:
    @app.get("/healthz", tags=["health"], summary="The process is alive")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], summary="The model is loaded and warmed up", responses={503: {}})
    async def readyz() -> JSONResponse:
        if not service.ready:
            return JSONResponse({"status": "starting"}, status_code=503)
        return JSONResponse({"status": "ready"})

    @app.get("/metrics", tags=["health"], summary="Prometheus metrics", response_class=PlainTextResponse)
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)


def _add_api_routes(app: FastAPI, service: ClassificationService) -> None:
    settings = service.settings
    guards = [Depends(_api_key_guard(settings)), Depends(_ready_guard(service))]

    @app.post(
        "/api/classify",
        response_model=ClassifyResponse,
        dependencies=guards,
        tags=["classify"],
        responses=ERROR_RESPONSES,
        summary="Classify one audio file against labels",
    )
    async def classify(
        audio: Annotated[UploadFile, File(description="Audio or video file (WAV, MP3, FLAC, OGG, M4A, WebM, …).")],
        labels: Annotated[list[str] | None, Form(description=LABELS_HELP)] = None,
        preset: Annotated[str | None, Form(description=PRESET_HELP)] = None,
        threshold: Annotated[float | None, Form(ge=0, le=1, description="Uncertainty threshold.")] = None,
        template: Annotated[str | None, Form(description="Prompt template with {} for the label.")] = None,
        multi_label: Annotated[bool, Form(description="Judge every label on its own.")] = False,
        label_threshold: Annotated[float | None, Form(ge=-1, le=1, description="Multi-label similarity.")] = None,
    ) -> ClassifyResponse:
        started = time.perf_counter()
        prepared = await service.prepare_labels(_labels_or_preset(labels, preset), _templates(template), multi_label)
        data = await _read_upload(audio, settings)
        result = await service.classify(
            data, prepared, source=audio.filename or "upload", threshold=threshold, label_thresholds=label_threshold
        )
        return ClassifyResponse(**result.model_dump(), elapsed_ms=elapsed_ms(started))

    @app.post(
        "/api/classify/batch",
        response_model=BatchResponse,
        dependencies=guards,
        tags=["classify"],
        responses=ERROR_RESPONSES,
        summary="Classify several files against one label set",
    )
    async def classify_batch(
        audio: Annotated[list[UploadFile], File(description="Repeat the field once per file.")],
        labels: Annotated[list[str] | None, Form(description=LABELS_HELP)] = None,
        preset: Annotated[str | None, Form(description=PRESET_HELP)] = None,
        threshold: Annotated[float | None, Form(ge=0, le=1)] = None,
        template: Annotated[str | None, Form()] = None,
        multi_label: Annotated[bool, Form()] = False,
        label_threshold: Annotated[float | None, Form(ge=-1, le=1)] = None,
    ) -> BatchResponse:
        started = time.perf_counter()
        if len(audio) > settings.max_batch_files:
            raise ApiError(422, "too_many_files", f"{len(audio)} files; the limit is {settings.max_batch_files}")
        prepared = await service.prepare_labels(_labels_or_preset(labels, preset), _templates(template), multi_label)
        uploads = [
            (await _read_upload(upload, settings), upload.filename or f"file-{i}") for i, upload in enumerate(audio)
        ]
        results = await service.classify_many(uploads, prepared, threshold=threshold, label_thresholds=label_threshold)
        return BatchResponse(results=results, elapsed_ms=elapsed_ms(started))

    @app.post(
        "/api/detect",
        response_model=DetectResponse,
        dependencies=guards,
        tags=["detect"],
        responses=ERROR_RESPONSES,
        summary="When each sound happens in a long recording",
    )
    async def detect(
        audio: Annotated[UploadFile, File(description="A (long) recording.")],
        labels: Annotated[list[str] | None, Form(description=LABELS_HELP)] = None,
        preset: Annotated[str | None, Form(description=PRESET_HELP)] = None,
        window_s: Annotated[float, Form(gt=0, le=60, description="Window length, seconds.")] = 5.0,
        hop_s: Annotated[float | None, Form(gt=0, description="Seconds between windows (default window/2).")] = None,
        threshold: Annotated[float, Form(ge=0, le=1, description="Score that starts an event.")] = 0.5,
        off_threshold: Annotated[float | None, Form(ge=0, le=1, description="Score that ends it.")] = None,
        smoothing_windows: Annotated[int, Form(ge=1, le=50)] = 1,
        min_duration_s: Annotated[float, Form(ge=0)] = 0.0,
        merge_gap_s: Annotated[float, Form(ge=0)] = 0.0,
        background: Annotated[str | None, Form(description="Labels that never make events.")] = None,
        template: Annotated[str | None, Form()] = None,
    ) -> DetectResponse:
        started = time.perf_counter()
        data = await _read_upload(audio, settings)
        detection = await service.detect(
            data,
            _labels_or_preset(labels, preset),
            window_s=window_s,
            hop_s=hop_s,
            threshold=threshold,
            off_threshold=off_threshold,
            smoothing_windows=smoothing_windows,
            min_duration_s=min_duration_s,
            merge_gap_s=merge_gap_s,
            background=background or None,
            templates=_templates(template),
            source=audio.filename or "upload",
        )
        return DetectResponse(**detection.model_dump(), elapsed_ms=elapsed_ms(started))

    @app.post(
        "/api/embed/audio",
        response_model=EmbeddingResponse,
        dependencies=guards,
        tags=["embed"],
        responses=ERROR_RESPONSES,
        summary="L2-normalised CLAP audio embeddings",
    )
    async def embed_audio(audio: Annotated[list[UploadFile], File(description="One or more files.")]):
        if len(audio) > settings.max_batch_files:
            raise ApiError(422, "too_many_files", f"{len(audio)} files; the limit is {settings.max_batch_files}")
        vectors = [
            await service.embed_audio(await _read_upload(upload, settings), upload.filename or "upload")
            for upload in audio
        ]
        return _embedding_response(service, vectors)

    @app.post(
        "/api/embed/text",
        response_model=EmbeddingResponse,
        dependencies=guards,
        tags=["embed"],
        responses=ERROR_RESPONSES,
        summary="L2-normalised CLAP text embeddings",
    )
    async def embed_text(request: TextEmbedRequest):
        too_long = [text for text in request.texts if len(text) > settings.max_label_chars]
        if too_long:
            raise ApiError(422, "text_too_long", f"a text is over {settings.max_label_chars} characters")
        return _embedding_response(service, list(await service.embed_text(request.texts)))

    @app.get("/api/info", response_model=InfoResponse, dependencies=[guards[0]], tags=["info"])
    async def info() -> InfoResponse:
        return InfoResponse(
            version=soundsift.__version__,
            model=service.classifier.model_id,
            devices=_devices(service),
            backend=settings.backend,
            sample_rate=service.classifier.sample_rate,
            ready=service.ready,
            limits={
                "max_upload_mb": settings.max_upload_mb,
                "max_duration_s": settings.max_duration_s,
                "max_labels": settings.max_labels,
                "max_label_chars": settings.max_label_chars,
                "max_batch_files": settings.max_batch_files,
                "max_queue": settings.max_queue,
                "micro_batch_size": settings.micro_batch_size,
            },
            defaults={
                "threshold": settings.threshold,
                "min_margin": settings.min_margin,
                "label_threshold": settings.label_threshold,
                "templates": settings.templates,
            },
        )


def _add_api_fallback(app: FastAPI) -> None:
    """Unknown /api/* paths get a JSON 404 instead of falling through to the web page."""

    @app.api_route("/api/{rest:path}", methods=["GET", "POST", "PUT", "DELETE", "PATCH"], include_in_schema=False)
    async def unknown_api_path(rest: str) -> None:
        raise ApiError(404, "not_found", f"no API endpoint /api/{rest}; see /docs")


def _api_key_guard(settings: Settings):
    async def guard(request: Request) -> None:
        if not settings.api_key:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip(), settings.api_key):
            raise ApiError(
                401, "unauthorized", "send 'Authorization: Bearer <SOUNDSIFT_API_KEY>'", {"WWW-Authenticate": "Bearer"}
            )

    return guard


def _ready_guard(service: ClassificationService):
    async def guard() -> None:
        if not service.ready:
            raise ApiError(503, "not_ready", "the model is still loading", {"Retry-After": RETRY_AFTER_S})

    return guard


async def _read_upload(upload: UploadFile, settings: Settings) -> bytes:
    limit = int(settings.max_upload_mb * 1024 * 1024)
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise ApiError(413, "upload_too_large", f"{upload.filename}: larger than {settings.max_upload_mb:g} MB")
    if not data:
        raise ApiError(422, "empty_audio", f"{upload.filename or 'upload'}: the file is empty (0 bytes)")
    return data


def _labels_or_preset(labels: list[str] | None, preset: str | None) -> str | list[str]:
    """The request's labels: comma-separated or repeated 'labels' fields, or a named 'preset'."""
    if labels and preset:
        raise ApiError(422, "invalid_labels", "send 'labels' or 'preset', not both")
    if preset:
        try:
            return preset_labels(preset)
        except KeyError as error:
            raise ApiError(422, "invalid_labels", str(error.args[0])) from None
    if not labels:
        raise ApiError(422, "invalid_request", "labels: Field required (or send 'preset')")
    return labels[0] if len(labels) == 1 else labels


def _templates(template: str | None) -> list[str] | None:
    return [template] if template and template.strip() else None


def _embedding_response(service: ClassificationService, vectors: list) -> EmbeddingResponse:
    return EmbeddingResponse(
        model=service.classifier.model_id,
        dim=len(vectors[0]) if vectors else 0,
        embeddings=[[float(x) for x in vector] for vector in vectors],
    )


def _devices(service: ClassificationService) -> list[str]:
    return [replica.backend.device for replica in service.replicas]


def _display_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host


def serve(settings: Settings) -> int:
    """Load the model, then run uvicorn until SIGINT/SIGTERM; in-flight requests finish first."""
    import uvicorn

    print(f"Loading {settings.model} ...", flush=True)
    service = ClassificationService.load(settings)
    app = create_app(service)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="info", timeout_graceful_shutdown=30)
    return 0
