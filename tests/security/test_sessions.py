"""Sessions, the failure throttle and CSRF on real `soundsift serve` processes: logout ends a session
on the server, the server checks the issue time, sessions and revocations survive a restart with a
store, a new key ends them all; wrong keys are throttled per address; a cookie on an unsafe request
from another origin is refused."""

from __future__ import annotations

import http.client
import math
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from soundsift.serving.sessions import RevokedSessions, SessionSigner
from tests.data.audio import wav_bytes
from tests.security.conftest import assert_error
from tests.server_process import ServerProcess, running_server
from tests.test_server_adapters import teaching_form

pytestmark = pytest.mark.slow  # real server processes

KEY = "session-test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
ALLOWED_ORIGIN = "https://allowed.example"


@pytest.fixture(scope="module")
def state(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("sessions")


@pytest.fixture(scope="module")
def server(tiny_model_dir, state):
    with running_server(
        tiny_model_dir,
        state / "server.log",
        api_key=KEY,
        session_store=str(state / "sessions.sqlite"),
        adapter_dir=str(state / "adapters"),
        cors_origins=f'["{ALLOWED_ORIGIN}", "*"]',
    ) as process:
        yield process


def log_in(url: str, key: str = KEY) -> str:
    response = requests.post(f"{url}/login", data={"key": key}, allow_redirects=False, timeout=10)
    assert response.status_code == 303, response.text[:300]
    return response.cookies["soundsift_session"]


def with_cookie(token: str, **headers: str) -> dict[str, str]:
    return {"Cookie": f"soundsift_session={token}", **headers}


def info_status(url: str, token: str) -> int:
    return requests.get(f"{url}/api/info", headers=with_cookie(token), timeout=10).status_code


def test_every_login_is_its_own_session_and_logout_ends_it_on_the_server(server):
    first, second = log_in(server.url), log_in(server.url)
    assert first != second and KEY not in first
    assert info_status(server.url, first) == 200 and info_status(server.url, second) == 200
    logout = requests.post(
        f"{server.url}/logout", headers=with_cookie(first, Origin=server.url), allow_redirects=False, timeout=10
    )
    assert logout.status_code == 303
    # The same cookie, sent again by a client that did not forget it, is refused everywhere.
    assert info_status(server.url, first) == 401
    page = requests.get(f"{server.url}/", headers=with_cookie(first, Accept="text/html"), allow_redirects=False)
    assert page.status_code == 303 and page.headers["Location"] == "/login"
    assert info_status(server.url, second) == 200, "other sessions go on"


def test_the_server_checks_when_a_session_was_issued(server, tmp_path):
    """Tokens signed with the right key: one issued 13 h ago is refused, one issued a minute ago
    is accepted (the cookie's Max-Age is only the browser's side)."""

    def token_issued(ago_s: float, key: str = KEY) -> str:
        signer = SessionSigner(
            key, max_age_s=12 * 3600, revoked=RevokedSessions(tmp_path / "x.sqlite"), clock=lambda: time.time() - ago_s
        )
        return signer.issue()

    assert info_status(server.url, token_issued(60)) == 200
    assert info_status(server.url, token_issued(13 * 3600)) == 401
    assert info_status(server.url, token_issued(60, key="another-key-entirely")) == 401


def test_sessions_survive_a_restart_with_a_store_and_a_new_key_ends_them(tiny_model_dir, tmp_path):
    store = str(tmp_path / "sessions.sqlite")
    with running_server(tiny_model_dir, tmp_path / "first.log", api_key=KEY, session_store=store) as first:
        kept, revoked = log_in(first.url), log_in(first.url)
        requests.post(f"{first.url}/logout", headers=with_cookie(revoked, Origin=first.url), timeout=10)
    with running_server(tiny_model_dir, tmp_path / "second.log", api_key=KEY, session_store=store) as second:
        assert info_status(second.url, kept) == 200
        assert info_status(second.url, revoked) == 401, "a logged-out session stays logged out after a restart"
    with running_server(tiny_model_dir, tmp_path / "third.log", api_key=KEY + "-new", session_store=store) as third:
        assert info_status(third.url, kept) == 401, "a new key ends every session"
    with running_server(tiny_model_dir, tmp_path / "fourth.log", api_key=KEY) as no_store:
        assert info_status(no_store.url, kept) == 401, "without a store a restart ends every session"
        assert info_status(no_store.url, log_in(no_store.url)) == 200


# --------------------------------------------------------------------------- CSRF


def classify_with_cookie(url: str, token: str, **headers: str) -> requests.Response:
    return requests.post(
        f"{url}/api/classify",
        files={"audio": ("a.wav", wav_bytes(1.0))},
        data={"labels": "tone, noise"},
        headers=with_cookie(token, **headers),
        timeout=60,
    )


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "http://127.0.0.1:1"},  # another port on the same host: SameSite does not stop it
        {"Origin": "http://localhost"},
        {"Origin": "null"},
        {"Origin": "https://evil.example"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
        {},  # neither header
    ],
)
def test_a_cookie_request_from_another_origin_is_refused(server, headers):
    assert_error(classify_with_cookie(server.url, log_in(server.url), **headers), 403, "cross_origin")


@pytest.mark.parametrize("origin_of", [lambda url: {"Origin": url}, lambda url: {"Sec-Fetch-Site": "same-origin"}])
def test_a_cookie_request_from_the_page_itself_is_accepted(server, origin_of):
    answer = classify_with_cookie(server.url, log_in(server.url), **origin_of(server.url))
    assert answer.status_code == 200 and answer.json()["top_label"], answer.text[:300]


def test_an_origin_named_in_cors_origins_may_use_the_session_but_a_star_does_not_open_it(server):
    token = log_in(server.url)
    assert classify_with_cookie(server.url, token, Origin=ALLOWED_ORIGIN).status_code == 200
    assert_error(classify_with_cookie(server.url, token, Origin="https://other.example"), 403, "cross_origin")


def test_bearer_requests_are_not_subject_to_the_origin_rule(server):
    answer = requests.post(
        f"{server.url}/api/classify",
        files={"audio": ("a.wav", wav_bytes(1.0))},
        data={"labels": "tone, noise"},
        headers={**AUTH, "Origin": "https://evil.example"},
        timeout=60,
    )
    assert answer.status_code == 200, answer.text[:300]


def test_a_cross_origin_page_cannot_delete_an_adapter_upload_one_index_or_upload_to_the_page(server):
    files, form = teaching_form(shots=1)
    taught = requests.post(f"{server.url}/api/adapters", files=files, data=form, headers=AUTH, timeout=120)
    assert taught.status_code == 201, taught.text[:300]
    token, foreign = log_in(server.url), {"Origin": f"http://127.0.0.1:{server.port + 1}"}
    deleted = requests.delete(f"{server.url}/api/adapters/workshop", headers=with_cookie(token, **foreign))
    assert_error(deleted, 403, "cross_origin")
    assert [item["name"] for item in requests.get(f"{server.url}/api/adapters", headers=AUTH).json()["adapters"]] == [
        "workshop"
    ]
    download = requests.get(f"{server.url}/api/adapters/workshop", headers=AUTH, timeout=10).content
    upload = requests.post(
        f"{server.url}/api/adapters",
        files={"adapter": ("x.safetensors", download)},
        data={"name": "planted"},
        headers=with_cookie(token, **foreign),
        timeout=30,
    )
    assert_error(upload, 403, "cross_origin")
    assert_error(
        requests.post(f"{server.url}/api/index", json={}, headers=with_cookie(token, **foreign), timeout=10),
        403,
        "cross_origin",
    )
    page_upload = requests.post(
        f"{server.url}/gradio_api/upload",
        files={"files": ("a.wav", wav_bytes(1.0))},
        headers=with_cookie(token, **foreign),
        timeout=30,
    )
    assert_error(page_upload, 403, "cross_origin")
    logout = requests.post(f"{server.url}/logout", headers=with_cookie(token, **foreign), allow_redirects=False)
    assert_error(logout, 403, "cross_origin")
    assert info_status(server.url, token) == 200, "a cross-origin logout did not end the session"
    same = requests.delete(f"{server.url}/api/adapters/workshop", headers=with_cookie(token, Origin=server.url))
    assert same.status_code in (200, 204), same.text[:300]


# --------------------------------------------------------------------------- failure throttle

BURST = 5


@pytest.fixture(scope="module")
def throttled(tiny_model_dir, tmp_path_factory):
    log = tmp_path_factory.mktemp("throttled") / "server.log"
    with running_server(
        tiny_model_dir, log, api_key=KEY, auth_failure_burst=str(BURST), auth_failure_refill_s="600"
    ) as process:
        yield process


def status_from(server: ServerProcess, source: str, method: str, path: str, **kwargs: object) -> int:
    """The status of one request sent from another loopback address (a client of its own)."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10, source_address=(source, 0))
    try:
        connection.request(method, path, **kwargs)  # type: ignore[arg-type]
        return connection.getresponse().status
    finally:
        connection.close()


def info_from(server: ServerProcess, source: str, key: str) -> int:
    return status_from(server, source, "GET", "/api/info", headers={"Authorization": f"Bearer {key}"})


def login_from(server: ServerProcess, source: str, key: str) -> int:
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    return status_from(server, source, "POST", "/login", body=f"key={key}", headers=form)


def test_parallel_wrong_keys_are_cut_off_after_the_burst(throttled):
    """12 wrong keys at once: exactly BURST are looked at (401), the rest get 429 with Retry-After;
    from then on even the right key gets 429 from that address, and another address is not affected."""
    started = time.monotonic()
    with ThreadPoolExecutor(12) as pool:
        answers = list(
            pool.map(
                lambda i: requests.get(f"{throttled.url}/api/info", headers={"Authorization": f"Bearer guess-{i}"}),
                range(12),
            )
        )
    statuses = sorted(answer.status_code for answer in answers)
    assert statuses == [401] * BURST + [429] * (12 - BURST), statuses
    refused = next(answer for answer in answers if answer.status_code == 429)
    assert_error(refused, 429, "too_many_failures")
    assert 0 < int(refused.headers["Retry-After"]) <= 600
    assert info_from(throttled, "127.0.0.1", KEY) == 429, "the right key is not even looked at while locked out"
    assert info_from(throttled, "127.0.0.2", KEY) == 200, "another address is not affected"
    login = requests.post(f"{throttled.url}/login", data={"key": KEY}, allow_redirects=False, timeout=10)
    assert login.status_code == 429 and math.isfinite(float(login.headers["Retry-After"]))
    elapsed = time.monotonic() - started
    print(f"{BURST} guesses looked at, then refused; {12 / elapsed:.0f} requests/s answered")
    lockouts = [line for line in throttled.log().splitlines() if "locked out" in line]
    assert len(lockouts) == 1 and "127.0.0.1" in lockouts[0], lockouts


def test_wrong_keys_at_the_login_page_count_too(throttled):
    assert [login_from(throttled, "127.0.0.3", f"wrong-{i}") for i in range(BURST)] == [401] * BURST
    assert login_from(throttled, "127.0.0.3", KEY) == 429
    assert info_from(throttled, "127.0.0.3", KEY) == 429, "the login page and the API share one budget"
    assert login_from(throttled, "127.0.0.4", KEY) == 303
