"""The search API on a real `soundsift serve` process: the API key guards every search route, and
POST /api/index reads only inside the library roots, whatever the path or symlink says."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
import requests
import soundfile

from soundsift import Classifier, Library
from tests.security.conftest import API_KEY, AUTH, assert_error
from tests.server_process import running_server, without_read_override

pytestmark = pytest.mark.slow  # a real server process
RATE = 16_000


def _clip(seed: int, seconds: float = 5.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    return (0.2 * np.sin(2 * np.pi * (200 + 70 * seed) * t) + rng.normal(0, 0.03, len(t))).astype(np.float32)


@pytest.fixture(scope="module")
def search_server(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    base = tmp_path_factory.mktemp("search-server")
    root = base / "library"
    (root / "first").mkdir(parents=True)
    (root / "later").mkdir()
    for seed in range(4):
        soundfile.write(root / "first" / f"clip{seed}.wav", _clip(seed), RATE)
    for seed in range(4, 6):
        soundfile.write(root / "later" / f"clip{seed}.wav", _clip(seed), RATE)
    outside = base / "outside"
    outside.mkdir()
    soundfile.write(outside / "secret.wav", _clip(9), RATE)
    os.symlink(outside, root / "escape")
    index = base / "index"
    Library(index, classifier=Classifier(model=str(tiny_model_dir), device="cpu")).add([root / "first"])
    with running_server(
        tiny_model_dir,
        base / "server.log",
        api_key=API_KEY,
        search_index=str(index),
        library_roots=str(root),
        ui="false",
        wrapper=without_read_override(),  # folders made unreadable are unreadable to it
    ) as process:
        process.root, process.outside = root, outside  # type: ignore[attr-defined]
        yield process


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/api/search"),
        ("GET", "/api/index/status"),
        ("POST", "/api/index"),
        ("DELETE", "/api/index/job"),
        ("GET", "/api/search/files/1"),
    ],
)
def test_search_routes_need_the_key(search_server, method: str, path: str) -> None:
    response = requests.request(method, f"{search_server.url}{path}", data={"query": "rain"}, timeout=10)
    assert_error(response, 401, "unauthorized")
    wrong = {"Authorization": "Bearer wrong-key-entirely"}
    assert requests.request(method, f"{search_server.url}{path}", headers=wrong, timeout=10).status_code == 401


def test_search_by_text_and_by_example(search_server) -> None:
    url = f"{search_server.url}/api/search"
    text = requests.post(url, data={"query": "door slamming -music", "top": "3"}, headers=AUTH, timeout=30)
    assert text.status_code == 200, text.text
    body = text.json()
    assert len(body["hits"]) == 3 and body["excluded"] == ["music"] and body["windows_searched"] == 4
    clip = search_server.root / "first" / "clip2.wav"
    with open(clip, "rb") as handle:
        example = requests.post(url, files={"audio": ("x.wav", handle)}, data={"top": "2"}, headers=AUTH, timeout=30)
    assert example.status_code == 200, example.text
    best = example.json()["hits"][0]
    assert best["path"] == str(clip.resolve()) and best["score"] > 0.999
    played = requests.get(f"{search_server.url}/api/search/files/{best['file_id']}", headers=AUTH, timeout=10)
    assert played.status_code == 200 and played.content == clip.read_bytes()
    assert_error(requests.get(f"{search_server.url}/api/search/files/999", headers=AUTH, timeout=10), 404, "not_found")


def test_bad_searches_are_4xx(search_server) -> None:
    url = f"{search_server.url}/api/search"
    assert_error(requests.post(url, data={}, headers=AUTH, timeout=10), 422, "invalid_query")
    for only_exclusions in ("-", "-music", "-music, (not speech)", " -a -b"):
        refused = requests.post(url, data={"query": only_exclusions}, headers=AUTH, timeout=10)
        assert "names no sound to look for" in assert_error(refused, 422, "invalid_query")["error"]["message"]
    assert_error(
        requests.post(url, data={"query": "rain", "top": "0"}, headers=AUTH, timeout=10), 422, "invalid_request"
    )
    broken = requests.post(url, files={"audio": ("x.wav", b"RIFF nonsense")}, headers=AUTH, timeout=10)
    assert_error(broken, 415, "audio_decode_error")
    assert_error(requests.post(url, data={"query": "x" * 600}, headers=AUTH, timeout=10), 422, "text_too_long")


def _start(server, paths: list[str]) -> requests.Response:
    return requests.post(f"{server.url}/api/index", json={"paths": paths}, headers=AUTH, timeout=10)


def test_indexing_is_restricted_to_the_library_roots(search_server) -> None:
    root, outside = search_server.root, search_server.outside
    for path in (
        str(outside),  # outside the roots
        str(outside / "secret.wav"),
        str(root / "escape"),  # a symlink inside the roots that points outside
        str(root / "escape" / "secret.wav"),
        str(root / ".." / "outside"),  # dot-dot out of the roots
        "/etc",
        "first",  # relative: never resolved against the server's working folder
    ):
        assert_error(_start(search_server, [path]), 403, "path_not_allowed")
    assert_error(_start(search_server, [str(root / "nothing-here")]), 404, "path_not_found")
    assert _start(search_server, []).status_code == 422
    status = requests.get(f"{search_server.url}/api/index/status", headers=AUTH, timeout=10).json()
    assert status["job"]["state"] == "idle" and status["library_roots"] == [str(root.resolve())]


def _finished(server) -> dict:
    """The index status once the running job has ended (polled; 60 s is only a hang guard)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status = requests.get(f"{server.url}/api/index/status", headers=AUTH, timeout=10).json()
        if status["job"]["state"] != "running":
            return status
        time.sleep(0.3)
    raise AssertionError(f"the index job did not finish: {status}")


def test_an_unreadable_folder_is_reported_and_its_entries_are_kept(search_server) -> None:
    first = search_server.root / "first"
    before = _finished(search_server)["index"]["files_indexed"]
    first.chmod(0)
    try:
        assert _start(search_server, [str(first)]).status_code == 202
        status = _finished(search_server)
    finally:
        first.chmod(0o755)
    report = status["job"]["report"]
    assert report["removed"] == 0 and [item["path"] for item in report["unreadable"]] == [str(first.resolve())]
    assert status["index"]["files_indexed"] == before


def test_an_index_job_runs_in_the_background(search_server) -> None:
    started = _start(search_server, [str(search_server.root)])
    assert started.status_code == 202, started.text
    assert started.json()["state"] == "running"
    status = _finished(search_server)
    job = status["job"]
    assert job["state"] == "finished", job
    assert job["report"]["added"] == 2 and job["report"]["unchanged"] == 4 and job["done"] == job["total"] == 2
    # The symlinked folder inside the root is not followed out of it.
    assert status["index"]["files_indexed"] == 6
    hits = requests.post(
        f"{search_server.url}/api/search", data={"query": "rain", "top": "10"}, headers=AUTH, timeout=30
    ).json()["hits"]
    assert all(not hit["path"].startswith(str(search_server.outside)) for hit in hits)
    assert any("/later/" in hit["path"] for hit in hits)


def test_a_running_index_job_can_be_stopped(search_server) -> None:
    many = search_server.root / "many"
    many.mkdir()
    for seed in range(60):
        soundfile.write(many / f"clip{seed}.wav", _clip(seed % 7, seconds=8.0), RATE)
    assert _start(search_server, [str(many)]).status_code == 202
    stopping = requests.delete(f"{search_server.url}/api/index/job", headers=AUTH, timeout=10)
    assert stopping.status_code == 200, stopping.text
    job = _finished(search_server)["job"]
    assert job["state"] == "stopped" and job["report"]["interrupted"], job
    assert job["report"]["added"] < 60
    again = requests.delete(f"{search_server.url}/api/index/job", headers=AUTH, timeout=10)
    assert again.status_code == 409 and again.json()["error"]["code"] == "no_index_job", again.text


def test_a_stored_adapter_reranks_a_search_request(search_server) -> None:
    """Teach two sounds through /api/adapters, then name one in a query with 'adapter': the taught
    recording comes first; an unknown adapter name is a 404."""
    first = search_server.root / "first"
    files = [("clips", (name, (first / name).read_bytes())) for name in ("clip0.wav", "clip3.wav")]
    taught = requests.post(
        f"{search_server.url}/api/adapters",
        files=files,
        data={"name": "tones", "clip_labels": ["dull", "bright"]},
        headers=AUTH,
        timeout=60,
    )
    assert taught.status_code == 201, taught.text
    url = f"{search_server.url}/api/search"
    best = {}
    for query in ("dull", "bright"):
        hits = requests.post(url, data={"query": query, "adapter": "tones", "top": "1"}, headers=AUTH, timeout=30)
        assert hits.status_code == 200, hits.text
        best[query] = Path(hits.json()["hits"][0]["path"]).name
    # One clip each ("dull" is clip0, "bright" clip3): Tip-Adapter's cache finds the recording taught.
    assert best == {"dull": "clip0.wav", "bright": "clip3.wav"}, best
    unknown = requests.post(url, data={"query": "bright", "adapter": "nothing"}, headers=AUTH, timeout=30)
    assert_error(unknown, 404, "adapter_not_found")
