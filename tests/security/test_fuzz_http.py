"""Fuzzing the HTTP surface of a real `soundsift serve` process that has an API key set.

(a) schemathesis over /openapi.json: with the key, no operation answers 5xx and the answers
    conform to the schema (status codes, content types, bodies); without the key (or with a wrong
    one) every /api/* operation answers 401, never 2xx.
(b) the Gradio app mounted at / (its API under /gradio_api/): without credentials none of its
    routes runs the model, lists the functions or reads/serves files (401/403); with the key
    (``Authorization: Bearer``) or the login cookie (``POST /login`` with form field ``key``) the
    page works; and hypothesis-made FileData payloads naming server files (/etc/passwd,
    /proc/self/environ, symlinks, ``..`` paths, loopback URLs) never make the server read them,
    copy them where /gradio_api/file= serves them, or hang.

Every request has a timeout; servers listen on 127.0.0.1 on a free port and are stopped at the
end. The number of requests made is printed after the session ("fuzz cases run").
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import requests
import schemathesis
import soundfile
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.security import fuzzing, page_api
from tests.server_process import ServerProcess, start_ready

pytestmark = [pytest.mark.security, pytest.mark.slow]

KEY = "fuzz-" + "k3y" * 4
AUTH = {"Authorization": f"Bearer {KEY}"}
WRONG_KEYS = [{}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}, {"Authorization": f"Basic {KEY}"}]
HANG_GUARD_S = 60  # only a frozen server takes this long to answer; no test waits for it otherwise
TIMEOUT = (5, HANG_GUARD_S)  # connect, read: every request is bounded
# The wrong-key throttle refills a thousand attempts a second here: a long run sends tens of
# thousands of wrong keys from one address on purpose (the throttle: tests/security/test_sessions.py).
LIMITS = {
    "max_upload_mb": "1",
    "max_duration_s": "30",
    "max_labels": "5",
    "max_batch_files": "4",
    "auth_failure_refill_s": "0.001",
}
# The page's functions, by name; their fn_index is read from the running page's /config.
CLASSIFY, DETECT = "classify", "detect"
# labels, threshold, min margin, template, multi-label, multi-label similarity, adapter, model, recording
CLASSIFY_INPUTS = ["siren, rain, speech", 0.35, 0.05, "", False, 0.3, "", None, False]
DETECT_INPUTS = ["siren, rain", 5.0, 0.5, ""]  # labels, window, threshold, background
SECRET_MARKERS = (b"root:x:0:0", KEY.encode(), b"SOUNDSIFT_")
RANDOM = os.environ.get("SOUNDSIFT_FUZZ_RANDOM") == "1"


@functools.cache
def fn_index(url: str, function: str) -> int:
    return page_api.function_index(url, function, AUTH)


def http_settings(default_examples: int) -> settings:
    return settings(
        max_examples=fuzzing.example_count(default_examples),
        deadline=None,
        derandomize=not RANDOM,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )


class Servers:
    """One keyed server for the module, started again if a test killed or froze it. Each
    server gets a Gradio cache folder of its own, so a file it copied there can be checked."""

    def __init__(self, model_dir: Path, tmp_path_factory) -> None:
        self.model_dir, self.tmp_path_factory = model_dir, tmp_path_factory
        self.current: ServerProcess | None = None
        self.cache: Path | None = None

    def get(self) -> ServerProcess:
        if self.current is not None and self._answers(self.current):
            return self.current
        self.stop()
        folder = self.tmp_path_factory.mktemp("fuzz-server")
        self.cache = folder / "gradio-cache"
        previous = os.environ.get("GRADIO_TEMP_DIR")
        os.environ["GRADIO_TEMP_DIR"] = str(self.cache)
        try:
            process = start_ready(self.model_dir, folder / "server.log", api_key=KEY, **LIMITS)
        finally:
            if previous is None:
                del os.environ["GRADIO_TEMP_DIR"]
            else:
                os.environ["GRADIO_TEMP_DIR"] = previous
        self.current = process
        return process

    @staticmethod
    def _answers(process: ServerProcess) -> bool:
        if process.process.poll() is not None:
            return False
        try:
            return requests.get(f"{process.url}/healthz", timeout=10).status_code == 200
        except requests.RequestException:
            return False

    def stop(self) -> None:
        if self.current is not None:
            if not self._answers(self.current):
                self.current.process.kill()  # frozen: SIGTERM would wait for the event loop
            self.current.terminate()
            self.current = None


@pytest.fixture(scope="module")
def servers(tiny_model_dir, tmp_path_factory):
    holder = Servers(tiny_model_dir, tmp_path_factory)
    yield holder
    holder.stop()


@pytest.fixture
def server(servers) -> ServerProcess:
    """A live keyed server (the module's, or a new one when a test has killed it)."""
    return servers.get()


def request(method: str, url: str, test: str, **kwargs) -> requests.Response:
    fuzzing.count_case(f"http: {test}")
    kwargs.setdefault("timeout", TIMEOUT)
    kwargs.setdefault("allow_redirects", False)
    return requests.request(method, url, **kwargs)


def wav_bytes(seconds: float = 1.0, rate: int = 16_000) -> bytes:
    buffer = io.BytesIO()
    t = np.arange(int(seconds * rate)) / rate
    soundfile.write(buffer, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), rate, format="WAV")
    return buffer.getvalue()


def assert_alive(server: ServerProcess) -> None:
    """The process runs and answers /healthz (a frozen event loop never does; a busy machine only
    answers later, so the bound is a hang guard, not a speed limit)."""
    assert server.process.poll() is None, f"the server died (exit {server.process.returncode}):\n{server.log()[-3000:]}"
    try:
        response = requests.get(f"{server.url}/healthz", timeout=(5, HANG_GUARD_S))
    except requests.RequestException as error:
        pytest.fail(f"the server stopped answering: {error}")
    assert response.status_code == 200, f"the server stopped answering: {response.status_code}"


# --------------------------------------------------------------------------- (a) schemathesis


# The operations of /openapi.json; test_schema_lists_no_other_operations keeps this list honest.
OPERATIONS = [
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("POST", "/api/classify"),
    ("POST", "/api/classify/batch"),
    ("POST", "/api/detect"),
    ("POST", "/api/embed/audio"),
    ("POST", "/api/embed/text"),
    ("GET", "/api/info"),
    ("POST", "/api/adapters"),
    ("GET", "/api/adapters"),
    ("GET", "/api/adapters/{name}"),
    ("DELETE", "/api/adapters/{name}"),
    ("POST", "/api/search"),
    ("GET", "/api/index/status"),
    ("POST", "/api/index"),
    ("DELETE", "/api/index/job"),
    ("GET", "/api/search/files/{file_id}"),
    ("POST", "/v1/embeddings"),
    ("POST", "/v1/embeddings_audio"),
    ("GET", "/v1/models"),
]
API_OPERATIONS = [operation for operation in OPERATIONS if operation[1].startswith(("/api/", "/v1/"))]
# Health routes take no input, so schemathesis has no invalid data for them: positive cases only.
CASES = [(*operation, "positive") for operation in OPERATIONS] + [
    (*operation, "negative") for operation in API_OPERATIONS
]
CHECKS = [not_a_server_error, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def api_schema(servers):
    return schemathesis.openapi.from_url(f"{servers.get().url}/openapi.json", timeout=10)


def run_schemathesis(operation, mode: str, examples: int, check_case) -> None:
    """Hypothesis over one operation's schemathesis strategy (positive or negative data).

    (schemathesis.pytest.from_fixture would do this per operation, but schemathesis 4.32 sets
    `request.node._nodeid`, which pytest 9.2 no longer has; the strategy API is stable.)
    """
    strategy = operation.as_strategy(generation_mode=GenerationMode(mode))

    @http_settings(examples)
    @given(case=strategy)
    def property_(case):
        check_case(case)

    property_()


def test_schema_lists_no_other_operations(api_schema):
    live = {(op.ok().method.upper(), op.ok().path) for op in api_schema.get_all_operations()}
    assert live == set(OPERATIONS), f"fuzz the new operations too: {sorted(live ^ set(OPERATIONS))}"


@pytest.mark.parametrize(("method", "path", "mode"), CASES)
def test_api_with_key_never_answers_5xx(server, api_schema, method, path, mode):
    """With the key: no 5xx, and status, content type and body as documented."""

    def check_case(case) -> None:
        fuzzing.count_case("http: schemathesis with the key")
        response = case.call(base_url=server.url, headers=AUTH, timeout=TIMEOUT)
        case.validate_response(response, checks=CHECKS, headers=AUTH)

    run_schemathesis(api_schema[path][method], mode, 15 if mode == "positive" else 10, check_case)


@pytest.mark.parametrize(("method", "path"), API_OPERATIONS)
def test_api_status_codes_are_documented(server, api_schema, method, path):
    """Malformed requests get a status code the schema lists (today: an undocumented 400)."""

    def check_case(case) -> None:
        fuzzing.count_case("http: schemathesis status codes")
        response = case.call(base_url=server.url, headers=AUTH, timeout=TIMEOUT)
        case.validate_response(response, checks=[status_code_conformance], headers=AUTH)

    run_schemathesis(api_schema[path][method], "negative", 10, check_case)


@pytest.mark.parametrize("mode", ["positive", "negative"])
@pytest.mark.parametrize(("method", "path"), API_OPERATIONS)
def test_api_without_key_is_401(server, api_schema, method, path, mode):
    """No key, a wrong key, a key without "Bearer", or a Basic one: always 401, never 2xx."""

    def check_case(case) -> None:
        for headers in WRONG_KEYS:
            fuzzing.count_case("http: schemathesis without the key")
            response = case.call(base_url=server.url, headers=headers, timeout=TIMEOUT)
            assert response.status_code == 401, (
                f"{case.method} {case.path} with headers {headers}: {response.status_code} {response.text[:300]}"
            )

    run_schemathesis(api_schema[path][method], mode, 5, check_case)


# --------------------------------------------------------------------------- label and text fields

ANY_CHARACTER = st.characters(codec=None, categories=None)  # surrogates, NUL and controls included
LABEL_PIECES = st.one_of(
    st.text(ANY_CHARACTER, min_size=1, max_size=12),
    st.sampled_from(["dog", "狗叫声", "\x00", "\u202e", "e\u0301", "\ufeff", "(not rain)", "a|b", "{}", "%s", "\\"]),
)


@http_settings(40)
@example(texts=["dog\ud800"])
@example(texts=["\x00", "\udfff"])
@given(texts=st.lists(st.lists(LABEL_PIECES, min_size=1, max_size=3).map("".join), min_size=1, max_size=4))
def test_embed_text_never_answers_5xx(server, texts):
    """Any JSON string (lone surrogates included: the known 500) is embedded or refused with 4xx."""
    response = request("POST", f"{server.url}/api/embed/text", "text fields", headers=AUTH, json={"texts": texts})
    assert response.status_code < 500, f"{texts!r}: {response.status_code} {response.text[:300]}"


@st.composite
def label_fields(draw) -> list[bytes]:
    """Label form fields as raw bytes: UTF-8 text (any code point that UTF-8 can carry) or not UTF-8 at all."""
    fields = []
    for _ in range(draw(st.integers(2, 4))):
        if draw(st.integers(0, 4)) == 0:
            fields.append(draw(st.binary(min_size=1, max_size=16)))
        else:
            text = draw(st.lists(LABEL_PIECES, min_size=1, max_size=3).map("".join))
            fields.append(text.encode("utf-8", "surrogatepass"))
    return fields


def is_clean_utf8(raw: bytes) -> bool:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return "\x00" not in text


@http_settings(40)
@example(fields=[b"dog", b"c\xe4t"])
@example(fields=[b"dog", b"cat\x00"])
@given(fields=label_fields())
def test_label_fields_are_kept_or_refused(server, fields):
    """Labels that are not valid UTF-8 or hold NUL are refused (422); others come back unchanged
    (the known bugs: invalid UTF-8 is mojibaked, NUL is accepted)."""
    parts = [("audio", ("a.wav", wav_bytes(0.5)))] + [("labels", (None, raw)) for raw in fields]
    response = request("POST", f"{server.url}/api/classify", "label fields", headers=AUTH, files=parts)
    assert response.status_code < 500, f"{fields!r}: {response.status_code} {response.text[:300]}"
    if not all(is_clean_utf8(raw) for raw in fields):
        assert response.status_code in (400, 415, 422), f"{fields!r} accepted: {response.text[:300]}"
    elif response.status_code == 200:
        # Labels are shown with their whitespace collapsed (and synonyms as "a | b"): compare without it.
        returned = {squash(score["label"]) for score in response.json()["scores"]}
        sent = [raw.decode("utf-8") for raw in fields]
        assert returned <= {squash(text) for text in sent} | {
            squash(part) for text in sent for part in text.split(",")
        }, f"labels changed on the way: sent {fields!r}, got {sorted(returned)!r}"


def squash(text: str) -> str:
    return "".join(text.split())


@pytest.mark.parametrize(
    ("name", "fields"),
    [
        ("100,000 synonyms", {"labels": "dog|" * 100_000 + "dog, cat"}),
        ("a 500 KB template", {"labels": "dog, cat", "template": "x" * 500_000 + "{}"}),
    ],
)
def test_huge_label_fields_are_refused_quickly(server, name, fields):
    """Known: templates and synonym lists have no bound (each synonym is a text-encoder call).

    "Quickly" is a ratio measured in the same run, not a number of seconds: the refusal must take
    less than an accepted request at the limits (16 synonyms, a 293-character template; labels new
    each time, so no cache helps it) takes ten times over. A server that did the unbounded work
    before refusing fails on any machine; a loaded machine slows both sides alike. Each side is the
    fastest of three tries, the one least disturbed by other load."""

    def send(data: dict) -> requests.Response:
        try:
            return request(
                "POST",
                f"{server.url}/api/classify",
                "huge label fields",
                headers=AUTH,
                files={"audio": ("a.wav", wav_bytes(0.5))},
                data=data,
                timeout=(5, HANG_GUARD_S),
            )
        except requests.Timeout:
            pytest.fail(f"{name}: no answer in {HANG_GUARD_S} s")

    response, refusal_s = quickest(lambda _: send(fields))
    assert response.status_code in (413, 422), f"{name}: {response.status_code} {response.text[:200]}"
    accepted, work_s = quickest(lambda attempt: send(at_the_limits(attempt)))
    assert accepted.status_code == 200, accepted.text[:300]
    assert refusal_s < 10 * work_s, (
        f"{name}: refused after {refusal_s:.3f} s; an accepted request at the limits takes {work_s:.3f} s"
    )


def at_the_limits(attempt: int) -> dict:
    """The largest label fields the server accepts: 16 synonyms and a 293-character template."""
    return {
        "labels": " | ".join(f"dog {attempt}-{i}" for i in range(16)) + f", cat {attempt}",
        "template": "x" * 290 + " {}",
    }


def quickest(send, tries: int = 3) -> tuple[requests.Response, float]:
    """The last answer of ``send(attempt)`` and the shortest time one of them took."""
    fastest = float("inf")
    for attempt in range(tries):
        started = time.monotonic()
        response = send(attempt)
        fastest = min(fastest, time.monotonic() - started)
    return response, fastest


# --------------------------------------------------------------------------- (b) Gradio routes


def gradio_requests() -> dict[str, tuple[str, str, dict]]:
    """Every Gradio route that runs a function, describes the app or serves files, as an
    unauthenticated client would call it."""
    example = sorted((Path(__file__).parents[2] / "soundsift" / "examples").glob("*.ogg"))[0]
    file_data = {"path": str(example), "meta": {"_type": "gradio.FileData"}, "orig_name": example.name}
    inputs = [file_data, *CLASSIFY_INPUTS]
    session = uuid.uuid4().hex[:11]
    return {
        "GET /config": ("GET", "/config", {}),
        "GET /gradio_api/info": ("GET", "/gradio_api/info", {}),
        "GET /gradio_api/openapi.json": ("GET", "/gradio_api/openapi.json", {}),
        "POST /gradio_api/upload": ("POST", "/gradio_api/upload", {"files": [("files", ("a.wav", wav_bytes()))]}),
        "POST /gradio_api/queue/join (classify by fn_index)": (
            "POST",
            "/gradio_api/queue/join",
            {"json": {"data": inputs, "fn_index": CLASSIFY, "session_hash": session, "trigger_id": None}},
        ),
        "GET /gradio_api/queue/data": ("GET", f"/gradio_api/queue/data?session_hash={session}", {"stream": True}),
        "POST /gradio_api/run/classify": ("POST", "/gradio_api/run/classify", {"json": {"data": inputs}}),
        "POST /gradio_api/api/classify": ("POST", "/gradio_api/api/classify", {"json": {"data": inputs}}),
        "POST /gradio_api/call/classify": ("POST", "/gradio_api/call/classify", {"json": {"data": inputs}}),
        "POST /gradio_api/run/lambda (a preset button)": ("POST", "/gradio_api/run/lambda", {"json": {"data": []}}),
        "GET /gradio_api/file=<example clip>": ("GET", f"/gradio_api/file={example}", {}),
        "GET /gradio_api/file=/etc/passwd": ("GET", "/gradio_api/file=/etc/passwd", {}),
        "GET /monitoring/summary": ("GET", "/monitoring/summary", {}),
    }


ROUTE_NAMES = list(gradio_requests())


def looks_like_model_output_or_file(body: bytes) -> bool:
    markers = (b'"confidence', b"similarity", b"**Uncertain", b"OggS", b"root:x:0:0", b'"named_endpoints"')
    markers += (b'"dependencies"', b'"path":', b"total_requests")
    return any(marker in body for marker in markers)


@pytest.mark.parametrize("route", ROUTE_NAMES)
@pytest.mark.parametrize("credentials", ["none", "wrong key"])
def test_gradio_routes_need_credentials(server, route, credentials):
    """The known bug: Gradio's own API runs the model (and serves the app config) without the key."""
    method, path, options = gradio_requests()[route]
    if "json" in options and options["json"].get("fn_index") == CLASSIFY:
        options["json"]["fn_index"] = fn_index(server.url, CLASSIFY)
    headers = {} if credentials == "none" else {"Authorization": "Bearer wrong"}
    response = request(method, server.url + path, "gradio routes without credentials", headers=headers, **options)
    try:
        body = next(response.iter_content(65536), b"") if options.get("stream") else response.content
    finally:
        response.close()
    assert response.status_code in (401, 403), f"{route}: {response.status_code} {body[:300]!r}"
    assert not looks_like_model_output_or_file(body), body[:300]


def test_unauthenticated_queue_join_never_runs_the_model(server):
    """Even if joining is answered, the event must not complete with model output."""
    session = uuid.uuid4().hex[:11]
    example = sorted((Path(__file__).parents[2] / "soundsift" / "examples").glob("*.ogg"))[0]
    file_data = {"path": str(example), "meta": {"_type": "gradio.FileData"}, "orig_name": example.name}
    body = {"data": [file_data, *CLASSIFY_INPUTS], "fn_index": fn_index(server.url, CLASSIFY), "session_hash": session}
    joined = request("POST", f"{server.url}/gradio_api/queue/join", "gradio queue without credentials", json=body)
    if joined.status_code in (401, 403):
        return
    messages = read_queue(server.url, session, headers={})
    completed = [m for m in messages if m.get("msg") == "process_completed"]
    assert not any(m.get("success") for m in completed), f"the model ran without credentials: {completed}"


def read_queue(url: str, session: str, headers: dict, limit_s: float = HANG_GUARD_S) -> list[dict]:
    """The server-sent events of one session until process_completed (``limit_s`` is a hang guard)."""
    messages: list[dict] = []
    deadline = time.monotonic() + limit_s
    with requests.get(
        f"{url}/gradio_api/queue/data", params={"session_hash": session}, headers=headers, stream=True, timeout=TIMEOUT
    ) as stream:
        if stream.status_code != 200:
            return [{"msg": "http_error", "status": stream.status_code}]
        for line in stream.iter_lines():
            if line.startswith(b"data:"):
                messages.append(json.loads(line[5:]))
                if messages[-1].get("msg") in ("process_completed", "close_stream", "unexpected_error"):
                    break
            if time.monotonic() > deadline:
                messages.append({"msg": "timeout"})
                break
    return messages


def run_classify(url: str, headers: dict, file_data, function: str = CLASSIFY) -> list[dict]:
    session = uuid.uuid4().hex[:11]
    data = [file_data, *(DETECT_INPUTS if function == DETECT else CLASSIFY_INPUTS)]
    joined = request(
        "POST",
        f"{url}/gradio_api/queue/join",
        "gradio queue with the key",
        headers=headers,
        json={"data": data, "fn_index": fn_index(url, function), "session_hash": session, "trigger_id": None},
    )
    if joined.status_code != 200:
        return [{"msg": "join_refused", "status": joined.status_code, "body": joined.text[:300]}]
    return read_queue(url, session, headers)


# --------------------------------------------------------------------------- the contract with credentials


def test_bearer_key_opens_the_page_api(server):
    """With `Authorization: Bearer <key>` the page's own calls work: config, upload, classify."""
    config = request("GET", f"{server.url}/config", "gradio with the key", headers=AUTH)
    assert config.status_code == 200, config.text[:300]
    uploaded = request(
        "POST",
        f"{server.url}/gradio_api/upload",
        "gradio with the key",
        headers=AUTH,
        files=[("files", ("a.wav", wav_bytes()))],
    )
    assert uploaded.status_code == 200, uploaded.text[:300]
    file_data = {"path": uploaded.json()[0], "meta": {"_type": "gradio.FileData"}, "orig_name": "a.wav"}
    messages = run_classify(server.url, AUTH, file_data)
    assert messages[-1].get("msg") == "process_completed" and messages[-1].get("success"), messages[-3:]


def test_login_cookie_opens_the_page_api(server):
    """`POST /login` with the form field `key` sets a cookie that the Gradio routes accept."""
    with requests.Session() as session:
        fuzzing.count_case("http: login")
        login = session.post(f"{server.url}/login", data={"key": KEY}, timeout=TIMEOUT, allow_redirects=False)
        assert login.status_code in (200, 204, 302, 303), login.text[:300]
        assert session.cookies, f"no cookie set by /login: {login.headers}"
        config = session.get(f"{server.url}/config", timeout=TIMEOUT)
        assert config.status_code == 200, config.text[:300]
        info = session.get(f"{server.url}/gradio_api/info", timeout=TIMEOUT)
        assert info.status_code == 200, info.text[:300]


@pytest.mark.parametrize("key", ["", "wrong", KEY + "x", KEY[:-1], KEY.upper()])
def test_login_with_a_wrong_key_sets_no_working_cookie(server, key):
    with requests.Session() as session:
        fuzzing.count_case("http: login")
        login = session.post(f"{server.url}/login", data={"key": key}, timeout=TIMEOUT, allow_redirects=False)
        assert login.status_code in (400, 401, 403, 422), login.text[:300]
        config = session.get(f"{server.url}/config", timeout=TIMEOUT)
        assert config.status_code in (401, 403), config.text[:300]


# --------------------------------------------------------------------------- FileData payloads


def cached_copy(cache: Path, path: str) -> Path | None:
    """Where Gradio would copy `path` into its cache (served by /gradio_api/file=), computed with
    Gradio's own content hash; None when this process can't read the file."""
    from gradio.processing_utils import hash_seed

    try:
        content = Path(path).read_bytes()
    except (OSError, ValueError):  # ValueError: a NUL in the path
        return None
    digest = hashlib.sha256(hash_seed + content).hexdigest()
    from gradio_client.utils import strip_invalid_filename_characters

    return cache / digest / strip_invalid_filename_characters(Path(path).name)


@pytest.fixture(scope="module")
def planted_links(tmp_path_factory):
    """Symlinks to secrets where an attacker might hope to find or guess them."""
    folder = tmp_path_factory.mktemp("links")
    links = []
    for name, target in (("clip.wav", "/etc/passwd"), ("env.wav", "/proc/self/environ")):
        link = folder / name
        link.symlink_to(target)
        links.append(str(link))
    return links


SECRET_PATHS = [
    "/etc/passwd",
    "/proc/self/environ",
    "/proc/self/cmdline",
    "/proc/self/status",
    "/proc/self/maps",
    "/proc/self/root/etc/passwd",
    "/proc/self/cwd/pyproject.toml",
    "/proc/1/environ",
    "/etc/hostname",
    "pyproject.toml",
    "../../../../../../../../etc/passwd",
    "/tmp/gradio/../../etc/passwd",
    "soundsift/../../../../../../etc/passwd",
    "/etc/./passwd",
    "//etc//passwd",
    "/etc/passwd\x00.wav",
    "file:///etc/passwd",
    "/",
    "/etc",
]


def loopback_urls(port: int) -> list[str]:
    return [
        f"http://127.0.0.1:{port}/api/info",
        f"http://localhost:{port}/gradio_api/file=/etc/passwd",
        f"http://[::1]:{port}/healthz",
        f"http://0.0.0.0:{port}/config",
        f"http://2130706433:{port}/healthz",
        f"http://127.1:{port}/metrics",
        "http://169.254.169.254/latest/meta-data/",
    ]


@st.composite
def file_data_payloads(draw, port: int, links: list[str]):
    target = draw(st.sampled_from(SECRET_PATHS + loopback_urls(port) + links))
    as_url = draw(st.sampled_from(["path", "url", "both"]))
    payload = {
        "path": target if as_url != "url" else "x.wav",
        "url": target if as_url != "path" else None,
        "orig_name": draw(st.sampled_from(["a.wav", "../../passwd", None])),
        "meta": {"_type": "gradio.FileData"},
    }
    if draw(st.booleans()):
        payload["is_stream"] = draw(st.booleans())
    if draw(st.booleans()):
        payload["size"] = draw(st.integers(-1, 2**40))
    function = draw(st.sampled_from([CLASSIFY, DETECT]))
    return target, payload, function


def test_file_data_payloads_never_read_server_files(servers, server, planted_links):
    port = server.port

    def plain(target: str) -> dict:
        return {"path": target, "url": None, "orig_name": "a.wav", "meta": {"_type": "gradio.FileData"}}

    @http_settings(30)
    @example(case=("/etc/passwd", plain("/etc/passwd"), CLASSIFY))
    @example(case=(planted_links[0], plain(planted_links[0]), DETECT))
    @given(case=file_data_payloads(port, planted_links))
    def property_(case):
        target, payload, function = case
        copy = cached_copy(servers.cache, target) if not target.startswith("http") else None
        existed = copy is not None and copy.exists()
        messages = run_classify(server.url, AUTH, payload, function)
        text = json.dumps(messages).encode()
        for marker in SECRET_MARKERS:
            assert marker not in text, f"{target}: the answer holds {marker!r}: {text[:500]!r}"
        assert not any(m.get("msg") == "timeout" for m in messages), f"{target}: no answer in {HANG_GUARD_S} s"
        assert not any(m.get("success") for m in messages if m.get("msg") == "process_completed"), messages[-1]
        if copy is not None and not existed:
            assert not copy.exists(), f"{target} was copied into Gradio's cache as {copy}"
            served = request(
                "GET", f"{server.url}/gradio_api/file={copy}", "gradio file= of a copied secret", headers=AUTH
            )
            assert served.status_code != 200, f"{target} is served back from {copy}"
        assert_alive(server)

    property_()


@pytest.mark.parametrize("target", ["/etc/passwd", "/proc/self/environ"])
def test_file_data_path_is_never_copied(servers, server, target):
    """One direct example of the known bug: the path reaches the decoder (copied to the cache)."""
    payload = {"path": target, "url": None, "orig_name": "a.wav", "meta": {"_type": "gradio.FileData"}}
    messages = run_classify(server.url, AUTH, payload)
    copy = cached_copy(servers.cache, target)
    error = json.dumps(messages[-1])
    assert "Not a readable audio" not in error, f"the decoder was given {target}: {error[:300]}"
    if copy is not None:
        served = request("GET", f"{server.url}/gradio_api/file={copy}", "gradio file= of a copied secret", headers=AUTH)
        assert served.status_code != 200 or not served.content.startswith(Path(target).read_bytes()[:16]), (
            f"{target} is served back from {copy}"
        )


# --------------------------------------------------------------------------- uploads that hurt the server


def surround_mkv() -> bytes:
    from tests.security.test_fuzz_decoder import _surround_mkv

    return _surround_mkv()


@pytest.mark.parametrize(
    ("name", "make"),
    [
        (
            "new: WAV with an unknown codec tag gives 500",
            lambda: (lambda d: d[:20] + b"\x34\x12" + d[22:])(
                fuzzing.raw_wav(np.zeros(1600, np.int16).tobytes(), channels=1, rate=16_000)
            ),
        ),
        (
            "new: float WAV at 3e38 gives non-finite scores",
            lambda: fuzzing.wav_bytes(np.full(16_000, 3e38, np.float32), 16_000, "FLOAT"),
        ),
        (
            "new: float WAV at 1e30 (finite, far past full scale)",
            lambda: fuzzing.wav_bytes(np.full(16_000, 1e30, np.float32), 16_000, "FLOAT"),
        ),
        ("known: 1 sample at 384 kHz gives 500", lambda: fuzzing.raw_wav(b"\x00\x10", channels=1, rate=384_000)),
        # Last: it kills the server (the next test gets a new one).
        ("new: 7.1 PCM Matroska segfaults the server", surround_mkv),
    ],
)
def test_hostile_uploads(server, name, make):
    """Each answered with a 4xx error or a finite result, and the server stays up."""
    for route in ("/api/classify", "/api/embed/audio"):
        try:
            response = request(
                "POST",
                server.url + route,
                "hostile uploads",
                headers=AUTH,
                files={"audio": ("clip.bin", make())},
                data={"labels": "siren, rain, speech"},
            )
        except requests.ConnectionError as error:
            pytest.fail(f"{name}: {route}: the connection dropped ({error}); server exit {server.process.poll()}")
        assert response.status_code < 500, f"{name}: {route}: {response.status_code} {response.text[:300]}"
        if response.status_code == 200:
            text = response.text
            assert "NaN" not in text and "Infinity" not in text, f"{name}: {route}: {text[:300]}"
        assert_alive(server)


@pytest.mark.parametrize("route", ["/api/classify", "/gradio_api/upload"])
def test_chunked_upload_past_the_limit_is_cut_off(server, route):
    """A 64 MB chunked upload (no Content-Length) is refused with 413 or cut off. Known: the limit
    is only applied after the whole body has been received and spooled; the client cannot see that
    (uvicorn reads and drops the rest of a refused body), so this only guards the status code."""
    boundary = "fuzzboundary"
    field = "audio" if route.startswith("/api") else "files"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="labels"\r\n\r\nsiren, rain\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="big.wav"\r\n'
        "Content-Type: audio/wav\r\n\r\n"
    ).encode()
    total = 64 * 2**20
    sent = 0

    def chunks():
        nonlocal sent
        yield head
        block = b"\0" * 2**20
        while sent < total:
            sent += len(block)
            yield block
        yield f"\r\n--{boundary}--\r\n".encode()

    try:
        response = request(
            "POST",
            server.url + route,
            "chunked uploads",
            headers={**AUTH, "Content-Type": f"multipart/form-data; boundary={boundary}"},
            data=chunks(),
            timeout=(5, 60),
        )
    except requests.ConnectionError:
        return  # cut off early
    assert response.status_code == 413, f"{route}: {response.status_code} {response.text[:300]} ({sent >> 20} MB sent)"


# Last: it freezes the server (the teardown kills it).
def test_dev_zero_file_data_does_not_freeze_the_server(server):
    """Known: FileData naming /dev/zero is read forever on the event loop.

    The health check comes after the server has dealt with the event (refused it, or run it to its
    end), not after a guessed second: a join that is refused never reads the file; one that is
    accepted is followed on the queue until its event ends (bounded)."""
    payload = {"path": "/dev/zero", "url": None, "orig_name": "a.wav", "meta": {"_type": "gradio.FileData"}}
    session = uuid.uuid4().hex[:11]
    body = {"data": [payload, *CLASSIFY_INPUTS], "fn_index": fn_index(server.url, CLASSIFY), "session_hash": session}
    try:
        joined = request("POST", f"{server.url}/gradio_api/queue/join", "gradio /dev/zero", headers=AUTH, json=body)
        if joined.status_code == 200:
            read_queue(server.url, session, AUTH)
    except requests.RequestException as error:
        pytest.fail(f"the server stopped answering after a FileData naming /dev/zero: {error}")
    assert_alive(server)


# --------------------------------------------------------------------------- uploaded adapter files


@pytest.fixture(scope="module")
def adapter_file(tiny_model_dir) -> bytes:
    """A real adapter of the served model (two taught sounds), the seed every mutation starts from."""
    from soundsift import Adapter, Classifier

    classifier = Classifier(model=str(tiny_model_dir), device="cpu")
    rate = 16_000
    t = np.arange(rate) / rate
    examples = {
        "hum": [(np.sin(2 * np.pi * 110 * t).astype(np.float32) * 0.3, rate)],
        "whistle": [(np.sin(2 * np.pi * 2400 * t).astype(np.float32) * 0.3, rate)],
    }
    return Adapter.fit(classifier, examples).to_bytes()


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(ANY_CHARACTER, max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def _mutated_metadata(data: bytes, draw_key: str, value: object, depth: int) -> bytes:
    """The adapter with one metadata field replaced (by any JSON value, nested ``depth`` levels more)."""
    from safetensors.numpy import load, save

    length = int.from_bytes(data[:8], "little")
    metadata = json.loads(json.loads(data[8 : 8 + length])["__metadata__"]["soundsift-adapter"])
    fields = sorted(metadata)
    metadata[fields[sum(map(ord, draw_key)) % len(fields)]] = "\x00placeholder"
    nested = "[" * depth + json.dumps(value, ensure_ascii=False) + "]" * depth  # text: json.dumps would recurse
    text = json.dumps(metadata, ensure_ascii=False).replace('"\\u0000placeholder"', nested)
    return save(load(data), metadata={"soundsift-adapter": text})


def _flipped(data: bytes, positions: list[int], values: list[int]) -> bytes:
    mutated = bytearray(data)
    header_end = 8 + int.from_bytes(data[:8], "little")
    for position, value in zip(positions, values):
        mutated[position % header_end] = value  # the header: length and JSON
    return bytes(mutated)


@http_settings(30)
@example(mutation=("field", "labels", ["\x1b[2J"] * 3, 0))
@example(mutation=("field", "options", [], 0))
@example(mutation=("field", "logit_scale", 10**400, 0))
@example(mutation=("field", "prompts", "x", 5000))
@given(
    mutation=st.one_of(
        st.tuples(st.just("field"), st.text(max_size=4), JSON_VALUES, st.integers(0, 3000)),
        st.tuples(
            st.just("bytes"), st.lists(st.integers(0, 10**6), min_size=1, max_size=6), st.lists(st.integers(0, 255))
        ),
    )
)
def test_uploaded_adapter_files_never_answer_5xx(server, adapter_file, mutation):
    """Mutated safetensors headers and adapter metadata: 201 (a consistent adapter) or a 4xx, never a 5xx."""
    if mutation[0] == "field":
        _, key, value, depth = mutation
        data = _mutated_metadata(adapter_file, key, value, depth)
    else:
        _, positions, values = mutation
        data = _flipped(adapter_file, positions, values)
    response = request(
        "POST",
        f"{server.url}/api/adapters",
        "adapter uploads",
        headers=AUTH,
        files={"adapter": ("fuzzed.adapter", data)},
        data={"name": "fuzzed"},
    )
    assert response.status_code in (201, 409, 413, 422), response.text[:300]
    assert response.headers["content-type"].startswith("application/json")
