"""The page's key prompt: the key, once accepted, becomes an HttpOnly session cookie holding a
signed session token (see serving.sessions); logging out revokes it on the server."""

from __future__ import annotations

import asyncio
import math
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from soundsift.serving.guards import client_address, cookie
from soundsift.serving.sessions import SESSION_COOKIE, Authenticator

# A wrong key also costs the client this long (without holding a worker); the failure throttle is
# what bounds parallel guessing.
WRONG_KEY_DELAY_S = 0.2

router = APIRouter(include_in_schema=False)

_TEXT = {
    "en": ("soundsift — sign in", "This server needs its API key.", "API key", "Sign in", "That key is not right."),
    "zh": ("soundsift — 登录", "此服务器需要 API 密钥。", "API 密钥", "登录", "密钥不正确。"),
}


@router.get("/login", response_class=HTMLResponse)
async def login_page(request: Request) -> HTMLResponse:
    return HTMLResponse(login_html(request.headers.get("accept-language", ""), failed=False))


def get_authenticator(request: Request) -> Authenticator:
    auth: Authenticator = request.app.state.auth
    return auth


Auth = Annotated[Authenticator, Depends(get_authenticator)]


@router.post("/login")
async def login(request: Request, auth: Auth, key: Annotated[str, Form(max_length=1000)]) -> Response:
    language = request.headers.get("accept-language", "")
    attempt = auth.attempt(client_address(request.scope), key)
    if attempt.retry_after_s > 0:
        retry = str(math.ceil(attempt.retry_after_s))
        return HTMLResponse(login_html(language, failed=True), status_code=429, headers={"Retry-After": retry})
    if not attempt.accepted:
        await asyncio.sleep(WRONG_KEY_DELAY_S)
        return HTMLResponse(login_html(language, failed=True), status_code=401)
    response = RedirectResponse("/", status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        auth.sessions.issue(),
        max_age=math.floor(auth.sessions.max_age_s),
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


@router.post("/logout")
async def logout(request: Request, auth: Auth) -> Response:
    """Ends the session on the server (its token is refused from now on, wherever it was copied)."""
    auth.sessions.revoke(cookie(request.scope, SESSION_COOKIE))
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE)
    return response


def login_html(accept_language: str, *, failed: bool) -> str:
    language = "zh" if accept_language.lower().lstrip().startswith("zh") else "en"
    title, intro, field, button, wrong = _TEXT[language]
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
