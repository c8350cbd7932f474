"""HTTP errors in one place: every error answers ``{"error": {"code", "message"}}`` with the
status its class declares (soundsift.errors: ``http_status``, ``retry_after_s``)."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from soundsift.errors import SoundsiftError

logger = logging.getLogger("soundsift.server")

RETRY_AFTER_S = "1"


class ApiError(SoundsiftError):
    """An error of the HTTP layer itself (a request the API refuses before the library sees it),
    with its status and code given where it is raised."""

    code = "invalid_request"

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.http_status, self.code, self.headers = status, code, headers


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable machine-readable error name.")
    message: str


class ErrorBody(BaseModel):
    error: ErrorDetail


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


def error_response(error: SoundsiftError) -> JSONResponse:
    """The JSON answer for any soundsift error, with its class's status (and Retry-After)."""
    headers = dict(getattr(error, "headers", None) or {})
    if error.retry_after_s is not None:
        headers["Retry-After"] = str(error.retry_after_s)
    body = {"error": {"code": error.code, "message": printable(str(error))}}
    return JSONResponse(body, status_code=error.http_status, headers=headers or None)


def printable(text: str) -> str:
    """Messages may quote client input; keep them encodable whatever the client sent."""
    return text.encode("utf-8", "replace").decode("utf-8")


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(SoundsiftError)
    async def soundsift_error(_: Request, error: SoundsiftError) -> JSONResponse:
        if error.http_status >= 500 and error.http_status != 503:
            logger.error("%s: %s", error.code, error)
        return error_response(error)

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
