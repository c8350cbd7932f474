"""OpenAI's error shape on /v1/*, as one ASGI layer: what it makes of each status and body, and what
it leaves alone (other paths, successful answers, bodies of another shape)."""

from __future__ import annotations

import asyncio
import json

from soundsift.serving.openai_errors import OpenAIErrors, openai_error


def soundsift_error(code: str, message: str = "went wrong") -> bytes:
    return json.dumps({"error": {"code": code, "message": message}}).encode()


def test_each_status_gets_openais_type_and_a_422_becomes_400():
    for status, expected_status, kind in [
        (422, 400, "invalid_request_error"),
        (400, 400, "invalid_request_error"),
        (401, 401, "authentication_error"),
        (404, 404, "not_found_error"),
        (413, 413, "invalid_request_error"),
        (429, 429, "rate_limit_error"),
        (503, 503, "server_error"),
        (500, 500, "server_error"),
    ]:
        translated = openai_error(status, soundsift_error("some_code"))
        assert translated is not None
        new_status, body = translated
        assert new_status == expected_status
        assert json.loads(body) == {
            "error": {"message": "went wrong", "type": kind, "param": None, "code": "some_code"}
        }


def test_a_body_of_another_shape_is_left_alone():
    for body in (b"not json", b"[]", b'{"detail": "x"}', b'{"error": "text"}', b""):
        assert openai_error(400, body) is None


def run(app, path: str) -> list[dict]:
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    asyncio.run(OpenAIErrors(app)({"type": "http", "path": path, "method": "POST"}, receive, send))
    return sent


def answering(status: int, *chunks: bytes):
    async def app(scope, receive, send) -> None:
        headers = [(b"content-type", b"application/json"), (b"content-length", str(sum(map(len, chunks))).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        for index, chunk in enumerate(chunks):
            await send({"type": "http.response.body", "body": chunk, "more_body": index < len(chunks) - 1})

    return app


def test_a_v1_error_sent_in_pieces_is_rewritten_with_its_length():
    body = soundsift_error("text_too_long", "input 0 is 5000 characters")
    sent = run(answering(422, body[:10], body[10:]), "/v1/embeddings")
    assert sent[0]["status"] == 400 and len(sent) == 2
    new_body = sent[1]["body"]
    assert dict(sent[0]["headers"])[b"content-length"] == str(len(new_body)).encode()
    assert json.loads(new_body)["error"]["type"] == "invalid_request_error"


def test_other_paths_successes_and_long_bodies_pass_through_unchanged():
    error = soundsift_error("invalid_labels")
    assert run(answering(422, error), "/api/classify")[0]["status"] == 422
    assert run(answering(200, b'{"data": []}'), "/v1/embeddings")[1]["body"] == b'{"data": []}'
    long = [b"x" * 40_000, b"y" * 40_000, b"z"]
    sent = run(answering(500, *long), "/v1/embeddings")
    assert sent[0]["status"] == 500 and b"".join(m.get("body", b"") for m in sent[1:]) == b"".join(long)
