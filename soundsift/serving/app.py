"""The HTTP API (FastAPI) with the web page mounted at /. A thin layer over ClassificationService.

Every request passes the guards of soundsift.serving.guards first (upload limit, API key, admission,
strict form decoding, Gradio file checks), whichever route it is for.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import re
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

import uvicorn
from fastapi import APIRouter, Depends, FastAPI, File, Form, Request, Security, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from fastapi.security import HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

import soundsift
from soundsift.core.results import Classification, FailedInput
from soundsift.core.settings import ModelSettings
from soundsift.core.text import check_text
from soundsift.detection.results import Detection
from soundsift.detection.windows import MAX_WINDOW_S, MIN_HOP_S, MIN_WINDOW_S, DetectOptions
from soundsift.errors import (
    AudioDecodeError,
    AudioError,
    ConfigurationError,
    LabelError,
    MissingDependencyError,
    ProcessingError,
    SoundsiftError,
)
from soundsift.i18n.presets import preset_labels, preset_names
from soundsift.serving.batcher import QueueFullError, ServiceStoppingError
from soundsift.serving.guards import (
    SESSION_COOKIE,
    AccessGuard,
    AdmissionGate,
    BodyLimit,
    GradioFileGuard,
    RequestMetrics,
    StrictFormCharset,
    session_token,
)
from soundsift.serving.service import ClassificationService, ClientGoneError, Upload, elapsed_ms
from soundsift.serving.settings import ServerSettings

logger = logging.getLogger("soundsift.serving.app")

RETRY_AFTER_S = "1"
LABELS_HELP = (
    "Comma-separated labels ('|' joins synonyms, '(not X)' excludes a sound; Chinese is translated), "
    "or the field repeated once per label."
)
PRESET_HELP = f"A named label set instead of labels: {', '.join(preset_names())}."
# The page's session cookie lives as long as a working day; the key can always log in again.
SESSION_MAX_AGE_S = 12 * 3600


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
    auth_required: bool
    limits: dict[str, float | int | None]
    defaults: dict[str, float | str | list[str]]


STATUS_BY_ERROR: dict[type[SoundsiftError], int] = {
    AudioDecodeError: 415,
    AudioError: 422,
    LabelError: 422,
    MissingDependencyError: 500,
    ConfigurationError: 422,
    ProcessingError: 500,
}

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": description}
    for status, description in {
        400: "Malformed request body: broken multipart or JSON (invalid_request)",
        401: "Missing or wrong API key (unauthorized)",
        413: "Request body over the upload limit (upload_too_large)",
        415: "Unsupported or corrupt media (audio_decode_error)",
        422: "Invalid input: invalid_request, invalid_labels, invalid_text, text_too_long, too_many_files, "
        "empty_audio, audio_too_short, audio_too_long, audio_too_large, non_finite_audio, invalid_configuration",
        499: "The client disconnected; the work was stopped (client_closed_request)",
        503: "Model not ready, queue full or shutting down (not_ready, overloaded, shutting_down); see Retry-After",
    }.items()
}

bearer_scheme = HTTPBearer(auto_error=False, description="SOUNDSIFT_API_KEY, when the server has one")


def create_app(service: ClassificationService) -> FastAPI:
    """The FastAPI app: API routers, health routes, the page (unless disabled) and the guards."""
    settings = service.settings

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await service.start()
        print(f"Running on local URL: http://{_display_host(settings.host)}:{settings.port}", flush=True)
        print(f"Model {service.classifier.model_id} ready on {', '.join(_devices(service))}", flush=True)
        yield
        await service.stop()

    app = FastAPI(
        title="soundsift",
        version=soundsift.__version__,
        description="Zero-shot audio classification with CLAP. Upload audio and plain-language labels. "
        "When the server has an API key, send it as 'Authorization: Bearer <key>'.",
        lifespan=lifespan,
    )
    app.state.service = service
    _install_error_handlers(app)
    app.include_router(health_router(service))
    app.include_router(api_router(service))
    if settings.api_key:
        app.include_router(login_router(settings.api_key))
    app.include_router(api_fallback_router())
    if settings.ui:
        from soundsift.serving.page import mount_ui

        mount_ui(app, service, upload_root())
    _install_guards(app, service)
    return app


def upload_root() -> Path:
    """Where the page's uploads land: a private folder per server unless GRADIO_TEMP_DIR names one."""
    if not os.environ.get("GRADIO_TEMP_DIR"):
        os.environ["GRADIO_TEMP_DIR"] = tempfile.mkdtemp(prefix="soundsift-uploads-")
    return Path(os.environ["GRADIO_TEMP_DIR"]).resolve()


def _install_guards(app: FastAPI, service: ClassificationService) -> None:
    """Outermost last: metrics see every answer, then the body limit, auth, admission, decoding rules."""
    settings = service.settings
    app.add_middleware(GradioFileGuard, upload_root=upload_root())
    app.add_middleware(StrictFormCharset)
    app.add_middleware(AdmissionGate, is_full=lambda: service.full, retry_after_s=RETRY_AFTER_S)
    app.add_middleware(AccessGuard, api_key=settings.api_key)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
        )
    app.add_middleware(BodyLimit, max_bytes=int(settings.max_upload_mb * 2**20))
    app.add_middleware(RequestMetrics, metrics=service.metrics)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_: Request, error: ApiError) -> JSONResponse:
        return error_response(error)

    @app.exception_handler(SoundsiftError)
    async def soundsift_error(_: Request, error: SoundsiftError) -> JSONResponse:
        status = next((code for kind, code in STATUS_BY_ERROR.items() if isinstance(error, kind)), 422)
        if status >= 500:
            logger.error("%s: %s", error.code, error)
        return error_response(ApiError(status, error.code, str(error)))

    @app.exception_handler(QueueFullError)
    async def queue_full(_: Request, error: QueueFullError) -> JSONResponse:
        code = "shutting_down" if isinstance(error, ServiceStoppingError) else "overloaded"
        return error_response(
            ApiError(503, code, f"the server is busy ({error}); retry shortly", {"Retry-After": RETRY_AFTER_S})
        )

    @app.exception_handler(ClientGoneError)
    async def client_gone(_: Request, error: ClientGoneError) -> JSONResponse:
        return error_response(ApiError(499, "client_closed_request", str(error)))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, error: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in issue['loc'] if p != 'body') or 'body'}: {issue['msg']}"
            for issue in error.errors()
        )
        return error_response(ApiError(422, "invalid_request", _printable(problems)))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, error: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code, "http_error")
        if error.status_code == 400:
            code = "invalid_request"
        return error_response(ApiError(error.status_code, code, _printable(str(error.detail))))

    @app.exception_handler(Exception)
    async def unexpected(_: Request, error: Exception) -> JSONResponse:
        logger.exception("unexpected error")
        return error_response(ApiError(500, "internal_error", "an unexpected error occurred; see the server log"))


def error_response(error: ApiError) -> JSONResponse:
    body = {"error": {"code": error.code, "message": error.message}}
    return JSONResponse(body, status_code=error.status, headers=error.headers)


def _printable(text: str) -> str:
    """Messages may quote client input; keep them encodable whatever the client sent."""
    return text.encode("utf-8", "replace").decode("utf-8")


def health_router(service: ClassificationService) -> APIRouter:
    router = APIRouter(tags=["health"])

    @router.get("/healthz", summary="The process is alive")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/readyz", summary="The model is loaded and warmed up", responses={503: {}})
    async def readyz() -> JSONResponse:
        if not service.ready:
            return JSONResponse({"status": "stopping" if service.draining else "starting"}, status_code=503)
        return JSONResponse({"status": "ready"})

    @router.get("/metrics", summary="Prometheus metrics", response_class=PlainTextResponse)
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return router


class ScoringForm:
    """The form fields every classification route shares: labels or a preset, and how to decide."""

    def __init__(
        self,
        labels: Annotated[list[str] | None, Form(description=LABELS_HELP)] = None,
        preset: Annotated[str | None, Form(description=PRESET_HELP)] = None,
        threshold: Annotated[float | None, Form(ge=0, le=1, description="Uncertainty threshold.")] = None,
        template: Annotated[str | None, Form(description="Prompt template with {} for the label.")] = None,
        multi_label: Annotated[bool, Form(description="Judge every label on its own.")] = False,
        label_threshold: Annotated[float | None, Form(ge=-1, le=1, description="Multi-label similarity.")] = None,
    ) -> None:
        self.labels = labels_or_preset(labels, preset)
        self.templates = [template] if template and template.strip() else None
        self.threshold, self.multi_label, self.label_threshold = threshold, multi_label, label_threshold


def labels_or_preset(labels: list[str] | None, preset: str | None) -> str | list[str]:
    """The request's labels: comma-separated or repeated 'labels' fields, or a named 'preset'."""
    if labels and preset:
        raise ApiError(422, "invalid_labels", "send 'labels' or 'preset', not both")
    if preset:
        try:
            return preset_labels(preset)
        except KeyError as error:
            raise ApiError(422, "invalid_labels", _printable(str(error.args[0]))) from None
    if not labels:
        raise ApiError(422, "invalid_request", "labels: Field required (or send 'preset')")
    return labels[0] if len(labels) == 1 else labels


def api_router(service: ClassificationService) -> APIRouter:
    settings = service.settings
    router = APIRouter(
        prefix="/api",
        dependencies=[Security(bearer_scheme), Depends(_ready_guard(service))],
        responses=ERROR_RESPONSES,
    )

    @router.post("/classify", response_model=ClassifyResponse, tags=["classify"], summary="Classify one audio file")
    async def classify(
        audio: Annotated[
            list[UploadFile], File(description="One audio or video file (WAV, MP3, FLAC, OGG, M4A, WebM, …).")
        ],
        form: Annotated[ScoringForm, Depends()],
    ) -> ClassifyResponse:
        started = time.perf_counter()
        if len(audio) != 1:
            raise ApiError(
                422, "too_many_files", f"send one 'audio' file here ({len(audio)} given); use /api/classify/batch"
            )
        prepared = await service.prepare_labels(form.labels, form.templates, form.multi_label)
        result = await service.classify(
            upload_of(audio[0]), prepared, threshold=form.threshold, label_thresholds=form.label_threshold
        )
        return ClassifyResponse(**result.model_dump(), elapsed_ms=elapsed_ms(started))

    @router.post(
        "/classify/batch",
        response_model=BatchResponse,
        tags=["classify"],
        summary="Classify several files against one label set",
    )
    async def classify_batch(
        audio: Annotated[list[UploadFile], File(description="Repeat the field once per file.")],
        form: Annotated[ScoringForm, Depends()],
    ) -> BatchResponse:
        started = time.perf_counter()
        check_file_count(len(audio), settings.max_batch_files)
        prepared = await service.prepare_labels(form.labels, form.templates, form.multi_label)
        results = await service.classify_many(
            [upload_of(upload, index) for index, upload in enumerate(audio)],
            prepared,
            threshold=form.threshold,
            label_thresholds=form.label_threshold,
        )
        return BatchResponse(results=results, elapsed_ms=elapsed_ms(started))

    @router.post(
        "/detect", response_model=DetectResponse, tags=["detect"], summary="When each sound happens in a recording"
    )
    async def detect(
        request: Request,
        audio: Annotated[UploadFile, File(description="A (long) recording.")],
        labels: Annotated[list[str] | None, Form(description=LABELS_HELP)] = None,
        preset: Annotated[str | None, Form(description=PRESET_HELP)] = None,
        window_s: Annotated[float, Form(ge=MIN_WINDOW_S, le=MAX_WINDOW_S, description="Window length, seconds.")] = 5.0,
        hop_s: Annotated[
            float | None, Form(ge=MIN_HOP_S, description="Seconds between windows (default window/2, at most window).")
        ] = None,
        threshold: Annotated[float, Form(ge=0, le=1, description="Score that starts an event.")] = 0.5,
        off_threshold: Annotated[float | None, Form(ge=0, le=1, description="Score that ends it.")] = None,
        smoothing_windows: Annotated[int, Form(ge=1, le=50)] = 1,
        min_duration_s: Annotated[float, Form(ge=0, le=86_400)] = 0.0,
        merge_gap_s: Annotated[float, Form(ge=0, le=86_400)] = 0.0,
        background: Annotated[str | None, Form(description="Labels that never make events.")] = None,
        template: Annotated[str | None, Form()] = None,
    ) -> DetectResponse:
        started = time.perf_counter()
        options = DetectOptions(
            window_s=window_s,
            hop_s=hop_s,
            threshold=threshold,
            off_threshold=off_threshold,
            smoothing_windows=smoothing_windows,
            min_duration_s=min_duration_s,
            merge_gap_s=merge_gap_s,
            background=background or None,
            templates=[template] if template and template.strip() else None,
        )
        detection = await service.detect(
            upload_of(audio), labels_or_preset(labels, preset), options, disconnected=request.is_disconnected
        )
        return DetectResponse(**detection.model_dump(), elapsed_ms=elapsed_ms(started))

    @router.post(
        "/embed/audio", response_model=EmbeddingResponse, tags=["embed"], summary="L2-normalised CLAP audio embeddings"
    )
    async def embed_audio(
        audio: Annotated[list[UploadFile], File(description="One or more files.")],
    ) -> EmbeddingResponse:
        check_file_count(len(audio), settings.max_batch_files)
        vectors = await service.embed_audio([upload_of(upload, index) for index, upload in enumerate(audio)])
        return embedding_response(service, vectors)

    @router.post(
        "/embed/text", response_model=EmbeddingResponse, tags=["embed"], summary="L2-normalised CLAP text embeddings"
    )
    async def embed_text(request: TextEmbedRequest) -> EmbeddingResponse:
        limit = service.model_settings.max_label_chars
        for index, text in enumerate(request.texts):
            if len(text) > limit:
                raise ApiError(422, "text_too_long", f"text {index} is {len(text)} characters; the limit is {limit}")
            check_text(text, f"text {index}")
        return embedding_response(service, list(await service.embed_text(request.texts)))

    @router.get("/info", response_model=InfoResponse, tags=["info"], summary="Model, devices, limits and defaults")
    async def info() -> InfoResponse:
        model = service.model_settings
        return InfoResponse(
            version=soundsift.__version__,
            model=service.classifier.model_id,
            devices=_devices(service),
            backend=model.backend,
            sample_rate=service.classifier.sample_rate,
            ready=service.ready,
            auth_required=settings.api_key is not None,
            limits={
                "max_upload_mb": settings.max_upload_mb,
                "max_duration_s": model.max_duration_s,
                "min_duration_s": model.min_duration_s,
                "max_decoded_mb": model.max_decoded_mb,
                "max_channels": model.max_channels,
                "max_labels": model.max_labels,
                "max_label_chars": model.max_label_chars,
                "max_synonyms": model.max_synonyms,
                "max_label_text_chars": model.max_label_text_chars,
                "max_templates": model.max_templates,
                "max_template_chars": model.max_template_chars,
                "max_batch_files": settings.max_batch_files,
                "max_queue": settings.max_queue,
                "micro_batch_size": settings.micro_batch_size,
                "max_detect_duration_s": settings.max_detect_duration_s,
                "max_detect_windows": settings.max_detect_windows,
            },
            defaults={
                "threshold": model.threshold,
                "min_margin": model.min_margin,
                "label_threshold": model.label_threshold,
                "templates": model.templates,
            },
        )

    return router


def check_file_count(count: int, limit: int) -> None:
    if count > limit:
        raise ApiError(422, "too_many_files", f"{count} files; the limit is {limit} (SOUNDSIFT_MAX_BATCH_FILES)")


def upload_of(upload: UploadFile, index: int = 0) -> Upload:
    return Upload.of(upload.file, safe_filename(upload.filename, f"file-{index}"))


_UNSAFE_NAME = re.compile(r"[\x00-\x1f\x7f]")


def safe_filename(name: str | None, fallback: str) -> str:
    """The client's file name as shown back in results: printable, no folders, at most 255 characters."""
    cleaned = _UNSAFE_NAME.sub("", _printable(name or "")).replace("\\", "/").rsplit("/", 1)[-1].strip()
    return cleaned[:255] or fallback


def login_router(api_key: str) -> APIRouter:
    """A key prompt for the web page: the key, once accepted, becomes an HttpOnly session cookie."""
    router = APIRouter(include_in_schema=False)

    @router.get("/login", response_class=HTMLResponse)
    async def login_page(request: Request) -> HTMLResponse:
        return HTMLResponse(login_html(request.headers.get("accept-language", ""), failed=False))

    @router.post("/login")
    async def login(request: Request, key: Annotated[str, Form(max_length=1000)]) -> Response:
        if not authorized_key(key, api_key):
            time.sleep(0.2)  # slows guessing, in this request's worker only
            return HTMLResponse(login_html(request.headers.get("accept-language", ""), failed=True), status_code=401)
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(
            SESSION_COOKIE,
            session_token(api_key),
            max_age=SESSION_MAX_AGE_S,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return response

    @router.post("/logout")
    async def logout() -> Response:
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE)
        return response

    return router


def authorized_key(given: str, api_key: str) -> bool:
    return hmac.compare_digest(given.strip().encode("utf-8", "replace"), api_key.encode())


_LOGIN_TEXT = {
    "en": ("soundsift — sign in", "This server needs its API key.", "API key", "Sign in", "That key is not right."),
    "zh": ("soundsift — 登录", "此服务器需要 API 密钥。", "API 密钥", "登录", "密钥不正确。"),
}


def login_html(accept_language: str, *, failed: bool) -> str:
    language = "zh" if accept_language.lower().lstrip().startswith("zh") else "en"
    title, intro, field, button, wrong = _LOGIN_TEXT[language]
    error = f'<p role="alert" style="color:#b00020">{wrong}</p>' if failed else ""
    return f"""<!doctype html>
<html lang="{language}"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title></head>
<body style="font-family:system-ui,sans-serif;max-width:24rem;margin:4rem auto;padding:0 1rem">
<h1 style="font-size:1.4rem">{title}</h1><p>{intro}</p>{error}
<form method="post" action="/login">
<label for="key">{field}</label><br>
<input id="key" name="key" type="password" autocomplete="current-password" required autofocus
 style="width:100%;padding:.5rem;margin:.4rem 0 1rem">
<button type="submit" style="padding:.5rem 1.2rem">{button}</button>
</form></body></html>"""


def api_fallback_router() -> APIRouter:
    """Unknown /api/* paths get a JSON 404 instead of falling through to the web page."""
    router = APIRouter(include_in_schema=False)

    @router.api_route("/api/{rest:path}", methods=["GET", "POST", "PUT", "DELETE", "PATCH"])
    async def unknown_api_path(rest: str) -> None:
        raise ApiError(404, "not_found", f"no API endpoint /api/{_printable(rest)[:200]}; see /docs")

    return router


def _ready_guard(service: ClassificationService) -> Any:
    async def guard() -> None:
        if not service.ready:
            if service.draining:
                raise ApiError(503, "shutting_down", "the server is shutting down", {"Retry-After": RETRY_AFTER_S})
            raise ApiError(503, "not_ready", "the model is still loading", {"Retry-After": RETRY_AFTER_S})

    return guard


def embedding_response(service: ClassificationService, vectors: list[Any]) -> EmbeddingResponse:
    return EmbeddingResponse(
        model=service.classifier.model_id,
        dim=len(vectors[0]) if vectors else 0,
        embeddings=[[float(x) for x in vector] for vector in vectors],
    )


def _devices(service: ClassificationService) -> list[str]:
    return [replica.backend.device for replica in service.replicas]


def _display_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host


def startup_warnings(settings: ServerSettings) -> list[str]:
    """What an operator must hear before exposing the server."""
    warnings = []
    if not settings.loopback_only and not settings.api_key:
        warnings.append(
            f"WARNING: listening on {settings.host} WITHOUT an API key: anyone who can reach port "
            f"{settings.port} can use the model. Set SOUNDSIFT_API_KEY (and put TLS in front)."
        )
    if settings.api_key:
        warnings.append("API key set: /api/* needs 'Authorization: Bearer <key>'; the page asks for it at /login.")
    if not settings.ui:
        warnings.append("The web page is off (--no-ui); only the HTTP API is served.")
    return warnings


def serve(model: ModelSettings, settings: ServerSettings) -> int:
    """Load the model, then run uvicorn until SIGINT/SIGTERM; in-flight requests get
    ``graceful_timeout_s`` to finish, and work still queued after that is answered with 503."""
    for warning in startup_warnings(settings):
        print(warning, flush=True)
    print(f"Loading {model.model} ...", flush=True)
    service = ClassificationService.load(model, settings)
    app = create_app(service)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level="info",
        timeout_graceful_shutdown=settings.graceful_timeout_s,
    )
    GracefulServer(config, service).run()
    return 0


class GracefulServer(uvicorn.Server):
    """uvicorn's Server that also starts the service's shutdown when the signal arrives: uvicorn
    itself only stops accepting connections and waits for running requests."""

    def __init__(self, config: uvicorn.Config, service: ClassificationService) -> None:
        super().__init__(config)
        self.service = service
        self.loop: asyncio.AbstractEventLoop | None = None

    async def serve(self, sockets: Any = None) -> None:
        self.loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: Any) -> None:
        if self.loop is not None and not self.service.draining:
            self.loop.call_soon_threadsafe(self.service.begin_shutdown)
        super().handle_exit(sig, frame)
