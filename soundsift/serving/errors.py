"""HTTP errors in one place: every error answers ``{"error": {"code", "message"}}``, and each
soundsift error type maps to one status."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from soundsift.errors import (
    AdapterMismatchError,
    AudioDecodeError,
    AudioError,
    ConfigurationError,
    LabelError,
    MissingDependencyError,
    ProcessingError,
    QueueFullError,
    ServiceStoppingError,
    SoundsiftError,
)
from soundsift.serving.adapters import AdapterLimitError, AdapterNotFoundError
from soundsift.serving.service import ClientGoneError

logger = logging.getLogger("soundsift.server")

RETRY_AFTER_S = "1"


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


STATUS_BY_ERROR: dict[type[SoundsiftError], int] = {
    AdapterNotFoundError: 404,
    AdapterLimitError: 409,
    AdapterMismatchError: 409,
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
        401: "Missing or wrong API key, or an ended session (unauthorized)",
        403: "The session cookie sent from another origin (cross_origin); teaching is off (teaching_disabled)",
        404: "No stored adapter of that name (adapter_not_found), or no such endpoint (not_found)",
        409: "Too many stored adapters (too_many_adapters), or an adapter of another model (adapter_mismatch)",
        413: "Request body over the upload limit (upload_too_large)",
        415: "Unsupported or corrupt media (audio_decode_error)",
        422: "Invalid input: invalid_request, invalid_labels, invalid_text, text_too_long, too_many_files, "
        "empty_audio, audio_too_short, audio_too_long, audio_too_large, non_finite_audio, invalid_configuration",
        429: "Too many wrong keys from this address (too_many_failures); see Retry-After",
        499: "The client disconnected; the work was stopped (client_closed_request)",
        503: "Model not ready, queue full or shutting down (not_ready, overloaded, shutting_down); see Retry-After",
    }.items()
}


def error_response(error: ApiError) -> JSONResponse:
    body = {"error": {"code": error.code, "message": error.message}}
    return JSONResponse(body, status_code=error.status, headers=error.headers)


def printable(text: str) -> str:
    """Messages may quote client input; keep them encodable whatever the client sent."""
    return text.encode("utf-8", "replace").decode("utf-8")


def install_error_handlers(app: FastAPI) -> None:
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
        return error_response(ApiError(422, "invalid_request", printable(problems)))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, error: StarletteHTTPException) -> JSONResponse:
        code = {400: "invalid_request", 404: "not_found", 405: "method_not_allowed"}.get(
            error.status_code, "http_error"
        )
        return error_response(ApiError(error.status_code, code, printable(str(error.detail))))

    @app.exception_handler(Exception)
    async def unexpected(_: Request, error: Exception) -> JSONResponse:
        logger.exception("unexpected error")
        return error_response(ApiError(500, "internal_error", "an unexpected error occurred; see the server log"))
