"""Item 11: on SIGTERM, requests that finish within the grace period get their answer, the rest a
clean 503, never a dropped connection; the process then exits."""

from __future__ import annotations

import concurrent.futures
import signal
import time

import pytest
import requests

from tests.data.audio import wav_bytes
from tests.server_process import ServerProcess
from tests.test_server import wait_for_metric

pytestmark = pytest.mark.slow  # a real server process under load


def test_work_past_the_grace_period_is_answered_with_503_not_cut_off(tiny_model_dir, tmp_path):
    server = ServerProcess(
        tiny_model_dir,
        tmp_path / "server.log",
        graceful_timeout_s="2",
        decode_workers="1",
        micro_batch_size="1",
        max_duration_s="600",
        max_upload_mb="100",
        max_decoded_mb="2000",
    )
    server.wait_ready()
    long_clip = wav_bytes(600, rate=16_000)  # over a second of decoding each, one at a time

    def call(_: int) -> requests.Response:
        return requests.post(
            f"{server.url}/api/classify", files={"audio": ("long.wav", long_clip)}, data={"labels": "a, b"}, timeout=60
        )

    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        pending = [pool.submit(call, index) for index in range(12)]
        wait_for_metric(server, "soundsift_admitted_requests", 6)
        started = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        responses = [future.result() for future in pending]  # a dropped connection would raise here
        server.process.wait(timeout=30)
        stopped_after = time.monotonic() - started
    server.terminate()
    statuses = [response.status_code for response in responses]
    print("statuses after SIGTERM:", statuses)
    assert set(statuses) <= {200, 503} and 200 in statuses and 503 in statuses, statuses
    for response in responses:
        if response.status_code == 503:
            assert response.json()["error"]["code"] == "shutting_down" and response.headers["Retry-After"]
    assert stopped_after < 2 + 5, f"the server took {stopped_after:.1f} s to stop"
    assert "Traceback" not in server.log()
