"""OpenAI's error shape on /v1/*: clients written for OpenAI's API (the ``openai`` package, LangChain,
vector-database loaders) read ``{"error": {"message", "type", "param", "code"}}`` and expect a
request they sent wrong to answer 400, where the rest of the API answers 422.

One ASGI middleware translates every /v1 error answer, whoever wrote it (a route, FastAPI's
validation, or a guard in front of the app such as the upload limit or the key check), so no route
has a second error path."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, Field

from soundsift.serving.guards import ASGIApp, Message, Receive, Scope, Send

OPENAI_PREFIX = "/v1/"
# Error bodies are a few hundred bytes; a longer one is passed on untouched rather than held.
_MAX_HELD_BYTES = 1 << 16
# OpenAI's error types by status (its documented set; 422 becomes 400 first).
_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    429: "rate_limit_error",
}


class OpenAIErrorDetail(BaseModel):
    message: str
    type: str = Field(description="OpenAI's error type: invalid_request_error, authentication_error, ...")
    param: str | None = None
    code: str = Field(description="soundsift's stable error name (the code /api/* answers with).")


class OpenAIErrorBody(BaseModel):
    error: OpenAIErrorDetail


OPENAI_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": OpenAIErrorBody, "description": description}
    for status, description in {
        400: "Invalid request: a bad input, text or data URI, wrong dimensions, too many inputs, or audio that "
        "does not decode (invalid_request_error)",
        401: "Missing or wrong API key (authentication_error)",
        404: "A model this server does not serve (not_found_error, model_not_found)",
        413: "Request body or its audio over the upload limit (upload_too_large)",
        429: "Too many wrong keys from this address (rate_limit_error); see Retry-After",
        503: "Model not ready, queue full or shutting down (server_error); see Retry-After",
    }.items()
}


def openai_answers_in_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI schema with the 422 that FastAPI lists for every /v1 operation with a body taken
    out: those routes answer 400 instead (this module), which their own responses document."""
    for path, operations in schema.get("paths", {}).items():
        if path.startswith(OPENAI_PREFIX):
            for operation in operations.values():
                operation.get("responses", {}).pop("422", None)
    return schema


def openai_error(status: int, body: bytes) -> tuple[int, bytes] | None:
    """The status and body OpenAI's clients expect for soundsift's ``{"error": {"code", "message"}}``
    answer (None for a body of another shape)."""
    try:
        error = json.loads(body)["error"]
        code, message = error["code"], error["message"]
    except (ValueError, KeyError, TypeError):
        return None
    status = 400 if status == 422 else status
    kind = _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return status, json.dumps({"error": {"message": message, "type": kind, "param": None, "code": code}}).encode()


class OpenAIErrors:
    """Rewrites the error answers of /v1/* routes into OpenAI's shape; other answers pass through."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(OPENAI_PREFIX):
            await self.app(scope, receive, send)
            return
        held: list[Message] = []

        async def translating_send(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] >= 400:
                held.append(message)
                return
            if not held:
                await send(message)
                return
            held.append(message)
            body = b"".join(part.get("body", b"") for part in held[1:])
            if message.get("more_body", False) and len(body) <= _MAX_HELD_BYTES:
                return
            await _send_held(send, held, body, finished=not message.get("more_body", False))
            held.clear()

        await self.app(scope, receive, translating_send)


async def _send_held(send: Send, held: list[Message], body: bytes, finished: bool) -> None:
    start = held[0]
    translated = openai_error(start["status"], body) if finished else None
    if translated is None:
        for message in held:
            await send(message)
        return
    status, new_body = translated
    headers = [(key, value) for key, value in start.get("headers", []) if key.lower() != b"content-length"]
    headers.append((b"content-length", str(len(new_body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": new_body})
