"""ASGI guards in front of every route of the server (the API, the web page and Gradio's own routes).

Each is a small pure-ASGI middleware, so it sees every request however the app below routes it
(any mount path, streaming or chunked bodies, websockets):

- `BodyLimit`: the upload limit, from Content-Length and again while the body streams in;
- `AccessGuard`: with an API key, every route but health, metrics, docs and the login page needs
  ``Authorization: Bearer <key>`` or a live session cookie (see serving.sessions); wrong keys are
  throttled per client, and a cookie on an unsafe request must come from the server's own origin;
- `AdmissionGate`: model routes are refused with 503 before their body is read when the service
  has no free place;
- `StrictFormCharset`: invalid UTF-8 in form fields reaches the app as lone surrogates (which label
  checks refuse) instead of being silently re-read as Latin-1;
- `GradioFileGuard`: Gradio file inputs may only name files uploaded through the page; URLs, device
  files, /proc, symlinks out of the upload folder and every other server path are refused.
"""

from __future__ import annotations

import codecs
import json
import math
import os
import stat
import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from soundsift.serving.sessions import SESSION_COOKIE, Authenticator

Scope = MutableMapping[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# Routes that never run the model or read user data: supervisors and browsers reach them unauthenticated.
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/login", "/logout", "/docs", "/openapi.json"})
# JSON bodies sent to Gradio's routes are small (component values, never file contents).
_GRADIO_JSON_LIMIT = 1 << 20
STRICT_UTF8 = "soundsift-strict-utf-8"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_DEFAULT_PORTS = {"http": 80, "https": 443}


async def send_json(send: Send, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    raw_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw_headers += [(key.lower().encode(), value.encode()) for key, value in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body})


def header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return None


def describe_limit(max_bytes: int) -> str:
    return f"{max_bytes / 2**20:g} MB ({max_bytes:,} bytes; SOUNDSIFT_MAX_UPLOAD_MB)"


class RequestMetrics:
    """Count and time every HTTP answer by route template and status (pure ASGI: it leaves the
    request's receive channel alone, so endpoints still see a client disconnecting)."""

    def __init__(self, app: ASGIApp, metrics: Any) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), 500

        async def observed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, observed_send)
        finally:
            route = getattr(scope.get("route"), "path", None)
            endpoint = route or ("other" if scope["path"].startswith("/api") else "/ui")
            self.metrics.requests.labels(endpoint, str(status)).inc()
            self.metrics.latency.labels(endpoint, str(status)).observe(time.perf_counter() - started)


class _BodyTooLargeError(Exception):
    pass


class BodyLimit:
    """413 for a body over ``max_bytes``: at once from Content-Length, or as soon as a chunked or
    lying body crosses the limit while it streams in (whatever the app below does with the error)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(send, f"the request is {int(declared):,} bytes")
            return
        received, exceeded, started = 0, False, False

        async def limited_receive() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    exceeded = True
                    raise _BodyTooLargeError
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if exceeded:  # whatever the app answers to the interrupted body, the client gets a 413
                if message["type"] == "http.response.start" and not started:
                    started = True
                    await self._refuse(send, f"the request body passed {received:,} bytes")
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except _BodyTooLargeError:
            if not started:
                await self._refuse(send, f"the request body passed {received:,} bytes")

    async def _refuse(self, send: Send, what: str) -> None:
        await send_json(send, 413, "upload_too_large", f"{what}; the limit is {describe_limit(self.max_bytes)}")


def bearer_token(scope: Scope) -> str | None:
    scheme, _, token = (header(scope, b"authorization") or "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


def cookie(scope: Scope, name: str) -> str | None:
    for pair in (header(scope, b"cookie") or "").split(";"):
        key, _, value = pair.strip().partition("=")
        if key == name:
            return value
    return None


def client_address(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


def _origin_of(url: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an origin or URL, default ports made explicit; None when malformed."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme.lower(), parts.scheme.lower())
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    return scheme, parts.hostname.lower(), port or _DEFAULT_PORTS[scheme]


def own_origin(scope: Scope) -> tuple[str, str, int] | None:
    """The origin this request was addressed to: its scheme and its Host header."""
    host = header(scope, b"host")
    return _origin_of(f"{scope.get('scheme', 'http')}://{host}") if host else None


class OriginCheck:
    """CSRF defence for requests a browser sends with the session cookie: an unsafe method (or a
    websocket) must come from this server's own origin (scheme, host and port exactly) or from an
    origin named in ``allowed``; ``Origin: null`` never passes, and without an Origin header only
    ``Sec-Fetch-Site: same-origin`` or ``none`` (typed into the address bar) does."""

    def __init__(self, allowed: list[str]) -> None:
        self.allowed = {origin for origin in map(_origin_of, allowed) if origin is not None}

    def problem(self, scope: Scope) -> str | None:
        origin = header(scope, b"origin")
        if origin is None:
            if header(scope, b"sec-fetch-site") in ("same-origin", "none"):
                return None
            return "a request authenticated by the session cookie needs an Origin header from this server's page"
        parsed = _origin_of(origin)
        if parsed is not None and (parsed == own_origin(scope) or parsed in self.allowed):
            return None
        return f"requests from origin {printable_origin(origin)} may not use this server's session cookie"


def printable_origin(origin: str) -> str:
    return repr(origin.encode("latin-1", "replace").decode("ascii", "replace")[:100])


def needs_origin_check(scope: Scope) -> bool:
    return scope["type"] == "websocket" or scope.get("method") not in SAFE_METHODS


class AccessGuard:
    """With an API key, every route outside OPEN_PATHS needs the key (header) or a live session cookie.

    A wrong bearer key counts against the client's failure budget (429 once spent); a session
    cookie on an unsafe request must come from this server's origin (403 ``cross_origin``).
    Unauthenticated browsers asking for a page are sent to /login; everything else gets a JSON 401,
    and websockets are closed with policy-violation (1008)."""

    def __init__(self, app: ASGIApp, auth: Authenticator | None, origins: OriginCheck) -> None:
        self.app, self.auth, self.origins = app, auth, origins

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or self.auth is None:
            await self.app(scope, receive, send)
            return
        refusal = self._refusal(scope, self.auth)
        if refusal is None:
            await self.app(scope, receive, send)
        elif scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
        else:
            await refusal(send)

    def _refusal(self, scope: Scope, auth: Authenticator) -> Callable[[Send], Awaitable[None]] | None:
        """None when the request may pass; otherwise what to answer."""
        session = auth.sessions.verify(cookie(scope, SESSION_COOKIE))
        bearer = bearer_token(scope)
        if session is not None and bearer is None and needs_origin_check(scope):
            problem = self.origins.problem(scope)
            if problem:
                return lambda send: send_json(send, 403, "cross_origin", problem)
        if scope["path"] in OPEN_PATHS:
            return None
        if bearer is not None:
            return self._bearer_refusal(scope, auth, bearer)
        if session is not None:
            return None
        if scope["type"] == "http" and scope["method"] == "GET" and "text/html" in (header(scope, b"accept") or ""):
            return _redirect_to_login
        return _unauthorized

    def _bearer_refusal(
        self, scope: Scope, auth: Authenticator, bearer: str
    ) -> Callable[[Send], Awaitable[None]] | None:
        attempt = auth.attempt(client_address(scope), bearer)
        if attempt.retry_after_s > 0:
            return lambda send: send_too_many_failures(send, attempt.retry_after_s)
        return None if attempt.accepted else _unauthorized


async def send_too_many_failures(send: Send, wait_s: float) -> None:
    await send_json(
        send,
        429,
        "too_many_failures",
        f"too many wrong keys from this address; try again in {math.ceil(wait_s)} s",
        {"Retry-After": str(math.ceil(wait_s))},
    )


async def _redirect_to_login(send: Send) -> None:
    await send(
        {"type": "http.response.start", "status": 303, "headers": [(b"location", b"/login"), (b"content-length", b"0")]}
    )
    await send({"type": "http.response.body", "body": b""})


async def _unauthorized(send: Send) -> None:
    await send_json(
        send,
        401,
        "unauthorized",
        "this server needs its API key: send 'Authorization: Bearer <SOUNDSIFT_API_KEY>' (or log in at /login)",
        {"WWW-Authenticate": "Bearer"},
    )


class AdmissionGate:
    """Refuse the routes that run the model (``model_paths``: the app collects the routes that declare
    it) with 503 before their body is read while ``is_full()`` says so."""

    def __init__(
        self, app: ASGIApp, is_full: Callable[[], bool], retry_after_s: str, model_paths: frozenset[str]
    ) -> None:
        self.app, self.is_full, self.retry_after_s, self.model_paths = app, is_full, retry_after_s, model_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] == "POST"
            and scope["path"] in self.model_paths
            and self.is_full()
        ):
            await send_json(
                send, 503, "overloaded", "the server is busy; retry shortly", {"Retry-After": self.retry_after_s}
            )
            return
        await self.app(scope, receive, send)


def _strict_utf8_search(name: str) -> codecs.CodecInfo | None:
    if name.replace("_", "-") != STRICT_UTF8:
        return None

    def decode(data: Any, errors: str = "strict") -> tuple[str, int]:
        # Bytes that are not UTF-8 become lone surrogates, which check_text refuses with a clear message.
        return codecs.utf_8_decode(data, "surrogateescape", True)

    def encode(text: Any, errors: str = "strict") -> tuple[bytes, int]:
        return codecs.utf_8_encode(text, "surrogateescape")

    return codecs.CodecInfo(encode, decode, name=STRICT_UTF8)


codecs.register(_strict_utf8_search)


class StrictFormCharset:
    """Multipart forms without a declared charset are read as strict UTF-8.

    Starlette decodes form fields with the request's charset and falls back to Latin-1 when they are
    not valid in it, which silently turned invalid UTF-8 labels into mojibake. Declaring our own
    charset (a UTF-8 codec that keeps bad bytes visible) makes such input fail the label checks."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        content_type = header(scope, b"content-type") or ""
        if (
            scope["type"] == "http"
            and scope["path"].startswith("/api/")
            and content_type.lower().startswith("multipart/form-data")
            and "charset=" not in content_type.lower()
        ):
            # Changed in place (not on a copy), so the outer metrics middleware still sees the route.
            scope["headers"] = [
                (key, value + f"; charset={STRICT_UTF8}".encode() if key == b"content-type" else value)
                for key, value in scope["headers"]
            ]
        await self.app(scope, receive, send)


class GradioFileGuard:
    """Gradio file values may only name regular files inside ``upload_root`` (where the page's uploads
    and cached examples live). Checked on every JSON body posted to a Gradio route and on file
    downloads, before Gradio copies or serves anything."""

    def __init__(self, app: ASGIApp, upload_root: Path) -> None:
        self.app = app
        self.upload_root = upload_root.resolve()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or "/gradio_api/" not in path:
            await self.app(scope, receive, send)
            return
        problem = self._file_route_problem(path)
        if problem:
            await send_json(send, 403, "file_not_allowed", problem)
            return
        if scope["method"] != "POST" or "json" not in (header(scope, b"content-type") or ""):
            await self.app(scope, receive, send)
            return
        body = await _read_body(receive, _GRADIO_JSON_LIMIT)
        if body is None:
            await send_json(send, 413, "upload_too_large", "a JSON request to the page may be at most 1 MB")
            return
        try:
            payload = json.loads(body or b"null")
        except (ValueError, UnicodeDecodeError):
            payload = None  # Gradio answers malformed JSON itself; there is no file in it
        problem = next((p for p in map(self.path_problem, _file_values(payload)) if p), None)
        if problem:
            await send_json(send, 403, "file_not_allowed", problem)
            return
        await self.app(scope, _replay(body, receive), send)

    def _file_route_problem(self, path: str) -> str | None:
        marker = "/file="
        if marker not in path:
            return None
        return self.path_problem(unquote(path.split(marker, 1)[1]))

    def path_problem(self, value: object) -> str | None:
        """Why a file value may not be used, or None when it names an uploaded file."""
        if not isinstance(value, str) or not value or "\x00" in value:
            return "a file value needs a path"
        if "://" in value or value.startswith(("http:", "https:", "file:", "data:")):
            return "files must be uploaded; URLs are not fetched"
        real = Path(os.path.realpath(value))
        if not real.is_relative_to(self.upload_root):
            return "only files uploaded through this page can be used"
        try:
            mode = os.stat(real).st_mode
        except OSError:
            return "no such uploaded file"
        if not stat.S_ISREG(mode):
            return "only regular uploaded files can be used"
        return None


def _file_values(payload: object) -> Iterator[object]:
    """Every ``path`` of a FileData-like object anywhere in a Gradio payload (and bare URLs in ``url``)."""
    if isinstance(payload, dict):
        if "path" in payload and ("meta" in payload or "orig_name" in payload or "url" in payload):
            yield payload["path"]
        elif "url" in payload and isinstance(payload.get("meta"), dict):
            yield payload["url"]
        for value in payload.values():
            yield from _file_values(value)
    elif isinstance(payload, list):
        for value in payload:
            yield from _file_values(value)


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks)
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
