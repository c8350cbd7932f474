"""The FastAPI app: the API routers, the page mounted at /, and the guards every request passes first
(upload limit, API key, admission, strict form decoding, Gradio file checks; see serving.guards)."""

from __future__ import annotations

import asyncio
import copy
import math
import os
import tempfile
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import APIRouter, Depends, FastAPI, Request, Security
from fastapi.middleware.cors import CORSMiddleware
from fastapi.routing import APIRoute

from soundsift._version import __version__
from soundsift.core.settings import ModelSettings
from soundsift.serving.dependencies import bearer_scheme, model_admission, require_ready
from soundsift.serving.errors import ERROR_RESPONSES, RETRY_AFTER_S, ApiError, install_error_handlers, printable
from soundsift.serving.guards import (
    AccessGuard,
    AdmissionGate,
    BodyLimit,
    GradioFileGuard,
    OriginCheck,
    RequestMetrics,
    StrictFormCharset,
)
from soundsift.serving.openai_errors import OpenAIErrors, openai_answers_in_schema
from soundsift.serving.routers import adapters, classify, detect, embed, health, info, login, openai
from soundsift.serving.routers import search as search_routes
from soundsift.serving.search_service import SearchService
from soundsift.serving.service import ClassificationService
from soundsift.serving.sessions import Authenticator, FailureThrottle, RevokedSessions, SessionSigner
from soundsift.serving.settings import ServerSettings

API_ROUTERS = (
    classify.router,
    detect.router,
    embed.router,
    info.router,
    adapters.router,
    search_routes.router,
    openai.router,
)


def create_app(service: ClassificationService) -> FastAPI:
    """The app for one service: API routers, health routes, the page (unless disabled) and the guards."""
    settings = service.settings

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await service.start()
        for served in service.models.values():
            print(
                f"Model {served.name} ({served.classifier.model_id}) ready on {', '.join(served.devices)}", flush=True
            )
        yield
        await asyncio.get_running_loop().run_in_executor(None, search.shutdown)
        await service.stop()
        if app.state.auth is not None:
            app.state.auth.sessions.revoked.close()

    app = FastAPI(
        title="soundsift",
        version=__version__,
        description="Zero-shot audio classification with CLAP. Upload audio and plain-language labels. "
        "When the server has an API key, send it as 'Authorization: Bearer <key>'.",
        lifespan=lifespan,
    )
    search = SearchService(service)
    app.state.service, app.state.search = service, search
    app.state.auth = authenticator(settings)
    install_error_handlers(app)
    generate_schema = app.openapi  # replacing app.openapi is FastAPI's documented way to edit the schema
    app.openapi = lambda: openai_answers_in_schema(generate_schema())  # type: ignore[method-assign]
    app.include_router(health.router)
    api = [Security(bearer_scheme), Depends(require_ready)]
    for router in API_ROUTERS:
        app.include_router(router, dependencies=api, responses=ERROR_RESPONSES)
    if settings.api_key:
        app.include_router(login.router)
    app.include_router(_api_fallback)
    if settings.ui:
        from soundsift.serving.page import mount_ui

        mount_ui(app, service, search, upload_root())
    _install_guards(app, service)
    return app


def model_paths(routers: Iterable[APIRouter]) -> frozenset[str]:
    """The paths of the routes that declare they run the model (``dependencies=[RUNS_MODEL]``)."""
    return frozenset(
        route.path
        for router in routers
        for route in router.routes
        if isinstance(route, APIRoute) and any(depends.dependency is model_admission for depends in route.dependencies)
    )


def authenticator(settings: ServerSettings) -> Authenticator | None:
    """The key, sessions and failure throttle of a server with an API key (None without one)."""
    if not settings.api_key:
        return None
    store = Path(settings.session_store).expanduser() if settings.session_store else None
    sessions = SessionSigner(settings.api_key, max_age_s=settings.session_max_age_s, revoked=RevokedSessions(store))
    throttle = FailureThrottle(settings.auth_failure_burst, settings.auth_failure_refill_s)
    return Authenticator(settings.api_key, sessions, throttle)


def upload_root() -> Path:
    """Where the page's uploads land: a private folder per server unless GRADIO_TEMP_DIR names one."""
    if not os.environ.get("GRADIO_TEMP_DIR"):
        os.environ["GRADIO_TEMP_DIR"] = tempfile.mkdtemp(prefix="soundsift-uploads-")
    return Path(os.environ["GRADIO_TEMP_DIR"]).resolve()


def _install_guards(app: FastAPI, service: ClassificationService) -> None:
    """Added innermost first: metrics see every answer (as the client gets it: /v1 errors in OpenAI's
    shape), then the body limit, auth, admission and the decoding rules run in that order."""
    settings = service.settings
    app.add_middleware(GradioFileGuard, upload_root=upload_root())
    app.add_middleware(StrictFormCharset)
    app.add_middleware(
        AdmissionGate, is_full=lambda: service.full, retry_after_s=RETRY_AFTER_S, model_paths=model_paths(API_ROUTERS)
    )
    origins = OriginCheck([origin for origin in settings.cors_origins if origin != "*"])
    app.add_middleware(AccessGuard, auth=app.state.auth, origins=origins)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
        )
    app.add_middleware(BodyLimit, max_bytes=int(settings.max_upload_mb * 2**20))
    app.add_middleware(OpenAIErrors)
    app.add_middleware(RequestMetrics, metrics=service.metrics)


_api_fallback = APIRouter(include_in_schema=False)


@_api_fallback.api_route("/api/{rest:path}", methods=["GET", "POST", "PUT", "DELETE", "PATCH"])
@_api_fallback.api_route("/v1/{rest:path}", methods=["GET", "POST", "PUT", "DELETE", "PATCH"])
async def unknown_api_path(request: Request, rest: str) -> None:
    """Unknown /api/* and /v1/* paths get a JSON 404 instead of falling through to the web page."""
    raise ApiError(404, "not_found", f"no API endpoint {printable(request.url.path)[:200]}; see /docs")


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
    ``graceful_timeout_s`` to finish, and work still unfinished then is answered with 503."""
    for warning in startup_warnings(settings):
        print(warning, flush=True)
    print(f"Loading {', '.join(settings.models or [model.model])} ...", flush=True)
    service = ClassificationService.load(model, settings)
    print(f"Memory estimated for the models: about {service.memory_estimate_mb:,.0f} MB", flush=True)
    app = create_app(service)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level="info",
        log_config=server_logging(),
        timeout_graceful_shutdown=math.ceil(settings.graceful_timeout_s),
    )
    GracefulServer(config, service).run()
    return 0


def server_logging() -> dict[str, Any]:
    """uvicorn's logging, with soundsift's own INFO lines (refused requests, shutdown) beside it in
    the same format: an operator reads one log."""
    config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    config["loggers"]["soundsift"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    return config


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

    async def startup(self, sockets: Any = None) -> None:
        """uvicorn's start (the app's lifespan: the models load and warm up; then the socket is
        bound), and only then the URL, with the port actually bound (``--port 0`` picks a free one)."""
        await super().startup(sockets)
        if self.started and self.servers and self.servers[0].sockets:
            port = self.servers[0].sockets[0].getsockname()[1]
            print(f"Running on local URL: http://{_display_host(self.config.host)}:{port}", flush=True)

    def handle_exit(self, sig: int, frame: Any) -> None:
        if self.loop is not None and not self.service.draining:
            self.loop.call_soon_threadsafe(self.service.begin_shutdown)
        super().handle_exit(sig, frame)
