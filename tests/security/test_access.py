"""Items 1 and 2: with an API key every route that can run the model needs it, Gradio's own routes
included; and the page's file inputs can only name files uploaded through the page."""

from __future__ import annotations

import os
import time

import pytest
import requests

from tests.security import page_api
from tests.security.conftest import API_KEY, AUTH, assert_error

pytestmark = pytest.mark.slow  # a real server process

GRADIO_ROUTES = [
    ("GET", "/config"),
    ("GET", "/gradio_api/info"),
    ("GET", "/gradio_api/config"),
    ("POST", "/gradio_api/queue/join"),
    ("GET", "/gradio_api/queue/data?session_hash=x"),
    ("POST", "/gradio_api/upload"),
    ("POST", "/gradio_api/run/predict"),
    ("POST", "/gradio_api/call/classify"),
    ("POST", "/gradio_api/api/predict"),
    ("GET", "/gradio_api/file=/etc/passwd"),
    ("GET", "//gradio_api/info"),
    ("GET", "/gradio_api/../gradio_api/info"),
    ("GET", "/theme.css"),
    ("POST", "/api/classify"),
    ("POST", "/api/detect"),
    ("POST", "/api/embed/text"),
    ("GET", "/api/info"),
]


@pytest.mark.parametrize(("method", "path"), GRADIO_ROUTES)
def test_every_route_that_can_reach_the_model_refuses_a_request_without_the_key(keyed_server, method, path):
    response = requests.request(method, f"{keyed_server.url}{path}", json={"data": []}, timeout=10)
    assert_error(response, 401, "unauthorized")
    assert response.headers["WWW-Authenticate"] == "Bearer"
    wrong = requests.request(method, f"{keyed_server.url}{path}", headers={"Authorization": "Bearer nope"}, timeout=10)
    assert wrong.status_code == 401


def test_gradio_queue_cannot_run_the_model_without_the_key(keyed_server, esc50_clips):
    fn = page_api.function_index(keyed_server.url, "classify", AUTH)
    uploaded = page_api.upload(keyed_server.url, esc50_clips[0], AUTH).json()[0]
    joined, _ = page_api.join(keyed_server.url, fn, page_api.classify_inputs(page_api.file_value(uploaded)), {})
    assert_error(joined, 401, "unauthorized")


def test_health_metrics_docs_and_login_stay_open(keyed_server):
    for path in ("/healthz", "/readyz", "/metrics", "/docs", "/openapi.json", "/login"):
        assert requests.get(f"{keyed_server.url}{path}", timeout=10).status_code == 200, path


def test_a_browser_is_sent_to_the_login_page_and_the_key_opens_the_page(keyed_server, esc50_clips):
    page = requests.get(f"{keyed_server.url}/", headers={"Accept": "text/html"}, allow_redirects=False, timeout=10)
    assert page.status_code == 303 and page.headers["Location"] == "/login"
    session = requests.Session()
    wrong = session.post(f"{keyed_server.url}/login", data={"key": "guess"}, timeout=10)
    assert wrong.status_code == 401 and "not right" in wrong.text and not session.cookies
    login = session.post(f"{keyed_server.url}/login", data={"key": API_KEY}, allow_redirects=False, timeout=10)
    assert login.status_code == 303
    cookie = next(c for c in session.cookies if c.name == "soundsift_session")
    assert API_KEY not in cookie.value and cookie.has_nonstandard_attr("HttpOnly")
    assert "SameSite=strict" in login.headers["set-cookie"] or "samesite=strict" in login.headers["set-cookie"].lower()
    assert session.get(f"{keyed_server.url}/", timeout=10).status_code == 200
    # With the cookie the page's own routes run the model, as the browser does after logging in
    # (which sends its own origin with every POST: cookie-authenticated POSTs need it).
    session.headers["Origin"] = keyed_server.url
    config = session.get(f"{keyed_server.url}/config", timeout=10).json()  # the session cookie authorises
    fn = next(i for i, dependency in enumerate(config["dependencies"]) if dependency["api_name"] == "classify")
    uploaded = session.post(
        f"{keyed_server.url}/gradio_api/upload", files={"files": esc50_clips[0].open("rb")}, timeout=30
    ).json()[0]
    joined = session.post(
        f"{keyed_server.url}/gradio_api/queue/join",
        json={"data": page_api.classify_inputs(page_api.file_value(uploaded)), "fn_index": fn, "session_hash": "s1"},
        timeout=10,
    )
    assert joined.status_code == 200
    with session.get(
        f"{keyed_server.url}/gradio_api/queue/data", params={"session_hash": "s1"}, stream=True, timeout=60
    ) as stream:
        completed = next(line for line in stream.iter_lines() if b"process_completed" in line)
    assert b'"success":true' in completed and b"confidence" in completed
    session.post(f"{keyed_server.url}/logout", timeout=10)
    assert session.get(f"{keyed_server.url}/gradio_api/info", timeout=10).status_code == 401


def test_the_bearer_key_also_works_on_the_pages_routes(keyed_server, esc50_clips):
    fn = page_api.function_index(keyed_server.url, "classify", AUTH)
    uploaded = page_api.upload(keyed_server.url, esc50_clips[0], AUTH).json()[0]
    joined, session = page_api.join(keyed_server.url, fn, page_api.classify_inputs(page_api.file_value(uploaded)), AUTH)
    assert joined.status_code == 200
    message = page_api.result(keyed_server.url, session, AUTH)
    assert message["success"] is True and "confidence" in message["output"]["data"][0]


@pytest.mark.parametrize(
    "path",
    [
        "/etc/passwd",
        "/proc/self/environ",
        "/dev/zero",
        "/dev/urandom",
        "../../../../etc/passwd",
        "http://127.0.0.1:1/secret.wav",
        "file:///etc/passwd",
        "",
    ],
)
def test_file_values_naming_server_paths_or_urls_are_refused_quickly(keyed_server, path):
    fn = page_api.function_index(keyed_server.url, "classify", AUTH)
    started = time.monotonic()
    joined, _ = page_api.join(keyed_server.url, fn, page_api.classify_inputs(page_api.file_value(path)), AUTH)
    assert_error(joined, 403, "file_not_allowed")
    assert time.monotonic() - started < 30  # a hang guard


def test_a_symlink_in_the_upload_folder_to_a_server_file_is_refused(keyed_server, esc50_clips):
    uploaded = page_api.upload(keyed_server.url, esc50_clips[0], AUTH).json()[0]
    link = os.path.join(os.path.dirname(uploaded), "innocent.wav")
    os.symlink("/etc/passwd", link)
    fn = page_api.function_index(keyed_server.url, "classify", AUTH)
    joined, _ = page_api.join(keyed_server.url, fn, page_api.classify_inputs(page_api.file_value(link)), AUTH)
    assert_error(joined, 403, "file_not_allowed")
    # A file uploaded through the page is accepted (the same request shape, a real upload).
    joined, session = page_api.join(keyed_server.url, fn, page_api.classify_inputs(page_api.file_value(uploaded)), AUTH)
    assert joined.status_code == 200 and page_api.result(keyed_server.url, session, AUTH)["success"] is True


@pytest.mark.parametrize(
    "target", ["/etc/passwd", "/proc/self/environ", "http://127.0.0.1:1/x", "https%3A%2F%2Fexample.org%2Fx"]
)
def test_the_file_route_serves_no_server_file_and_fetches_no_url(keyed_server, target):
    response = requests.get(f"{keyed_server.url}/gradio_api/file={target}", headers=AUTH, timeout=10)
    assert response.status_code == 403
    assert "root:" not in response.text and "PATH=" not in response.text
