"""Servers for the security suite: real `soundsift serve` processes on loopback, with an API key."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from tests.security import fuzzing
from tests.server_process import running_server

API_KEY = "correct-horse-battery"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
# Small limits, so tests can cross them cheaply.
LIMITS = {"max_upload_mb": "1", "max_duration_s": "30", "max_detect_windows": "40", "max_detect_duration_s": "120"}


@pytest.fixture(scope="package")
def keyed_server(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    log = tmp_path_factory.mktemp("keyed") / "server.log"
    with running_server(tiny_model_dir, log, api_key=API_KEY, **LIMITS) as process:
        yield process


def assert_error(response: requests.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text[:500]
    body = response.json()
    assert body["error"]["code"] == code and body["error"]["message"], body
    return body


def process_memory_kb(pid: int) -> dict[str, int]:
    """VmRSS (now) and VmHWM (peak since start) of a process, in kB, from /proc."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0])
    return fields


def pytest_terminal_summary(terminalreporter) -> None:
    """How many fuzz cases ran, per test (the issue asks for the count)."""
    if fuzzing.CASE_COUNTS:
        terminalreporter.section("fuzz cases run")
        for line in fuzzing.summary_lines():
            terminalreporter.write_line(line)
