"""The HTTP API against a real uvicorn server on loopback (tiny model)."""

from __future__ import annotations

import concurrent.futures
import io
import os
import re
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import requests
import soundfile

from tests.server_process import ServerProcess, running_server

pytestmark = pytest.mark.slow  # real server processes

LIMITS = {"max_upload_mb": "1", "max_duration_s": "30", "max_labels": "5", "max_batch_files": "4"}


@pytest.fixture(scope="module")
def server(tiny_model_dir, tmp_path_factory):
    with running_server(tiny_model_dir, tmp_path_factory.mktemp("server") / "server.log", **LIMITS) as process:
        yield process


@pytest.fixture(scope="module")
def keyed_server(tiny_model_dir, tmp_path_factory):
    with running_server(
        tiny_model_dir,
        tmp_path_factory.mktemp("keyed") / "server.log",
        api_key="s3cret-key",
        cors_origins='["https://example.org"]',
    ) as process:
        yield process


def wav_bytes(seconds: float, rate: int = 16_000, frequency: float = 440.0) -> bytes:
    buffer = io.BytesIO()
    t = np.arange(int(seconds * rate)) / rate
    soundfile.write(buffer, (0.3 * np.sin(2 * np.pi * frequency * t)).astype(np.float32), rate, format="WAV")
    return buffer.getvalue()


def assert_error(response: requests.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"]["code"] == code and body["error"]["message"]
    return body


def test_startup_prints_url_after_model_is_ready(server):
    log = server.log()
    assert f"Running on local URL: http://127.0.0.1:{server.port}" in log
    assert log.index("Loading") < log.index("ready on cpu") <= log.index("Running on local URL") + 200


def test_the_documented_requests_call(server, esc50_clips, classifier):
    with open(esc50_clips[0], "rb") as sample:
        response = requests.post(
            f"{server.url}/api/classify", files={"audio": sample}, data={"labels": "狗叫声,猫叫声,鸟叫声"}
        )
    assert response.status_code == 200, response.text
    body = response.json()
    for key in ("top_label", "confidence", "uncertain", "margin", "scores", "duration_s", "model", "elapsed_ms"):
        assert key in body
    scores = [s["score"] for s in body["scores"]]
    assert scores == sorted(scores, reverse=True)
    assert {s["label"] for s in body["scores"]} == {"狗叫声", "猫叫声", "鸟叫声"}
    expected = classifier.classify(esc50_clips[0], "狗叫声,猫叫声,鸟叫声")
    assert body["top_label"] == expected.top_label
    assert body["confidence"] == pytest.approx(expected.confidence, abs=1e-5)
    assert body["duration_s"] == pytest.approx(5.0)


def test_classify_options_and_repeated_label_fields(server, esc50_clips):
    with open(esc50_clips[1], "rb") as sample:
        response = requests.post(
            f"{server.url}/api/classify",
            files={"audio": ("clip.wav", sample)},
            data=[
                ("labels", "dog barking | dog bark"),
                ("labels", "rain"),
                ("threshold", "0.99"),
                ("template", "the sound of {}"),
                ("multi_label", "true"),
                ("label_threshold", "-1"),
            ],
        )
    body = response.json()
    assert response.status_code == 200, body
    assert {s["label"] for s in body["scores"]} == {"dog barking | dog bark", "rain"}
    assert body["uncertain"] is True and set(body["detected_labels"]) == {"dog barking | dog bark", "rain"}


def test_min_margin_is_a_request_option_over_http(server, esc50_clips):
    def uncertain(**fields: str) -> bool:
        with open(esc50_clips[1], "rb") as sample:
            response = requests.post(
                f"{server.url}/api/classify",
                files={"audio": ("clip.wav", sample)},
                data={"labels": "dog, rain, siren", "threshold": "0", **fields},
            )
        assert response.status_code == 200, response.text
        return response.json()["uncertain"]

    assert uncertain(min_margin="1") is True  # no top-1 leads the next score by a whole 1.0
    assert uncertain(min_margin="0") is False
    assert_error(
        requests.post(
            f"{server.url}/api/classify",
            files={"audio": ("a.wav", wav_bytes(1))},
            data={"labels": "a, b", "min_margin": "2"},
        ),
        422,
        "invalid_request",
    )


@pytest.mark.parametrize(
    ("files", "data", "status", "code"),
    [
        ({"audio": ("notes.wav", b"definitely not audio" * 20)}, {"labels": "a, b"}, 415, "audio_decode_error"),
        ({"audio": ("empty.wav", b"")}, {"labels": "a, b"}, 422, "empty_audio"),
        ({"audio": ("long.wav", wav_bytes(31, rate=8_000))}, {"labels": "a, b"}, 422, "audio_too_long"),
        ({"audio": ("a.wav", wav_bytes(1))}, {"labels": "only one"}, 422, "invalid_labels"),
        ({"audio": ("a.wav", wav_bytes(1))}, {"labels": "a,b,c,d,e,f"}, 422, "invalid_labels"),
        ({"audio": ("a.wav", wav_bytes(1))}, {"labels": "a, " + "x" * 201}, 422, "invalid_labels"),
        ({"audio": ("a.wav", wav_bytes(1))}, {"labels": "a, b", "template": "no slot"}, 422, "invalid_labels"),
        ({"audio": ("a.wav", wav_bytes(1))}, {"labels": "a, b", "threshold": "7"}, 422, "invalid_request"),
        ({"audio": ("a.wav", wav_bytes(1))}, {}, 422, "invalid_request"),
        (None, {"labels": "a, b"}, 422, "invalid_request"),
        ({"audio": ("big.wav", wav_bytes(80, rate=8_000))}, {"labels": "a, b"}, 413, "upload_too_large"),
    ],
)
def test_classify_errors(server, files, data, status, code):
    assert_error(requests.post(f"{server.url}/api/classify", files=files, data=data), status, code)


def test_batch_keeps_order_and_reports_the_corrupt_file_in_place(server, esc50_clips):
    files = [("audio", (p.name, p.read_bytes())) for p in esc50_clips[:2]]
    files.insert(1, ("audio", ("corrupt.mp3", b"\xff\xfb" + bytes(500))))
    response = requests.post(f"{server.url}/api/classify/batch", files=files, data={"labels": "dog, rain, siren"})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["source"] for r in results] == [esc50_clips[0].name, "corrupt.mp3", esc50_clips[1].name]
    assert results[1]["error"] == "audio_decode_error" and "corrupt.mp3" in results[1]["message"]
    assert results[0]["top_label"] and results[2]["top_label"]
    too_many = [("audio", (f"{i}.wav", wav_bytes(0.5))) for i in range(5)]
    assert_error(
        requests.post(f"{server.url}/api/classify/batch", files=too_many, data={"labels": "a, b"}),
        422,
        "too_many_files",
    )


def test_embeddings(server, esc50_clips, classifier):
    audio = requests.post(
        f"{server.url}/api/embed/audio", files=[("audio", (p.name, p.read_bytes())) for p in esc50_clips[:2]]
    ).json()
    assert audio["dim"] == 16 and len(audio["embeddings"]) == 2
    np.testing.assert_allclose(audio["embeddings"], classifier.embed_audio(esc50_clips[:2]), atol=1e-5)
    text = requests.post(f"{server.url}/api/embed/text", json={"texts": ["a dog", "rain"]}).json()
    np.testing.assert_allclose(text["embeddings"], classifier.embed_text(["a dog", "rain"]), atol=1e-5)
    assert_error(requests.post(f"{server.url}/api/embed/text", json={"texts": []}), 422, "invalid_request")


def test_health_info_docs_and_unknown_routes(server):
    assert requests.get(f"{server.url}/healthz").json() == {"status": "ok"}
    assert requests.get(f"{server.url}/readyz").json() == {"status": "ready"}
    info = requests.get(f"{server.url}/api/info").json()
    assert info["devices"] == ["cpu"] and info["limits"]["max_labels"] == 5 and info["ready"] is True
    assert info["limits"]["max_upload_mb"] == 1
    schema = requests.get(f"{server.url}/openapi.json").json()
    assert {"/api/classify", "/api/classify/batch", "/api/embed/audio", "/api/embed/text", "/api/info"} <= set(
        schema["paths"]
    )
    # /v1 answers a bad request with OpenAI's 400, and its schema says so in place of FastAPI's 422.
    answers = {path: operation["responses"] for path, item in schema["paths"].items() for operation in item.values()}
    assert {"/v1/embeddings", "/v1/models"} <= set(answers)
    assert "422" in answers["/api/classify"] and "422" not in answers["/v1/embeddings"]
    assert "400" in answers["/v1/embeddings"] and not any("422" in answers[path] for path in answers if "/v1/" in path)
    assert requests.get(f"{server.url}/docs").status_code == 200
    assert_error(requests.get(f"{server.url}/api/nothing"), 404, "not_found")


def test_concurrent_requests_are_batched_without_cross_talk(server, esc50_clips, classifier):
    clips = [esc50_clips[i % len(esc50_clips)] for i in range(32)]
    label_sets = ["dog, rain, siren", "cat, crow, clock tick", "sea waves, crackling fire"]
    barrier = threading.Barrier(32)

    def call(index: int) -> tuple[int, dict]:
        barrier.wait()
        response = requests.post(
            f"{server.url}/api/classify",
            files={"audio": (clips[index].name, clips[index].read_bytes())},
            data={"labels": label_sets[index % 3]},
            timeout=120,
        )
        return response.status_code, response.json()

    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        answers = list(pool.map(call, range(32)))
    for index, (status, body) in enumerate(answers):
        assert status == 200, body
        expected = classifier.classify(clips[index], label_sets[index % 3])
        assert body["source"] == clips[index].name
        assert [s["label"] for s in body["scores"]] == [s.label for s in expected.scores]
        assert body["confidence"] == pytest.approx(expected.confidence, abs=1e-5)
    metrics = requests.get(f"{server.url}/metrics").text
    sizes = {
        float(m.group(1)): float(m.group(2))
        for m in re.finditer(r'soundsift_batch_size_bucket\{le="([\d.]+)"\} ([\d.]+)', metrics)
    }
    clips_in_batches = float(re.search(r"soundsift_batch_size_sum ([\d.]+)", metrics).group(1))
    batches = float(re.search(r"soundsift_batch_size_count ([\d.]+)", metrics).group(1))
    assert batches > 0 and clips_in_batches > batches, "no batch held more than one clip"
    assert sizes[1.0] < batches
    assert 'soundsift_requests_total{endpoint="/api/classify",status="200"}' in metrics
    assert "soundsift_request_seconds_bucket" in metrics and "soundsift_queue_depth" in metrics
    assert "soundsift_inference_seconds_count" in metrics


def test_api_key_and_cors(keyed_server, esc50_clips):
    url = f"{keyed_server.url}/api/classify"
    sample = {"audio": ("a.wav", wav_bytes(1))}
    assert_error(requests.post(url, files=sample, data={"labels": "a, b"}), 401, "unauthorized")
    assert_error(
        requests.post(url, files=sample, data={"labels": "a, b"}, headers={"Authorization": "Bearer nope"}),
        401,
        "unauthorized",
    )
    ok = requests.post(url, files=sample, data={"labels": "a, b"}, headers={"Authorization": "Bearer s3cret-key"})
    assert ok.status_code == 200
    assert requests.get(f"{keyed_server.url}/healthz").status_code == 200
    assert requests.get(f"{keyed_server.url}/readyz").status_code == 200
    preflight = requests.options(
        url, headers={"Origin": "https://example.org", "Access-Control-Request-Method": "POST"}
    )
    assert preflight.headers.get("access-control-allow-origin") == "https://example.org"
    other = requests.options(url, headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in other.headers


HANG_GUARD_S = 120  # only a hung server takes this long; no test waits for it otherwise


def test_sigterm_lets_in_flight_requests_finish(tiny_model_dir, tmp_path, esc50_clips):
    # The micro-batch waits up to 5 s for more clips, so all four requests are surely in flight
    # together when the signal comes (however fast this machine decodes). The grace period is far
    # longer than their work on any machine: what is tested is that they finish, not how fast
    # (work cut off at the deadline is tests/security/test_shutdown.py).
    settings = {"micro_batch_wait_ms": "5000", "micro_batch_size": "8", "graceful_timeout_s": str(HANG_GUARD_S)}
    with running_server(tiny_model_dir, tmp_path / "server.log", **settings) as process:
        long_clip = wav_bytes(240, rate=16_000)

        def slow_request():
            return requests.post(
                f"{process.url}/api/classify",
                files={"audio": ("long.wav", long_clip)},
                data={"labels": "a, b"},
                timeout=HANG_GUARD_S,
            )

        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            pending = [pool.submit(slow_request) for _ in range(4)]
            wait_for_metric(process, "soundsift_admitted_requests", 4)
            code = process.terminate(timeout_s=2 * HANG_GUARD_S)
            statuses = [future.result().status_code for future in pending]
    assert statuses == [200] * 4
    # uvicorn re-raises the signal after its graceful shutdown, so the exit status says SIGTERM.
    assert code in (0, -signal.SIGTERM)
    assert "Finished server process" in process.log()


def wait_for_metric(process: ServerProcess, name: str, value: float, timeout_s: float = HANG_GUARD_S) -> None:
    """Until the server's gauge ``name`` reads ``value`` (``timeout_s`` is a hang guard)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = re.search(
            rf"^{name} ([\d.e+]+)$", requests.get(f"{process.url}/metrics", timeout=30).text, re.MULTILINE
        )
        if found and float(found.group(1)) >= value:
            return
        time.sleep(0.05)
    raise TimeoutError(f"{name} never reached {value}")


def test_detect_endpoint(server, esc50_clips):
    from soundsift.core.audio import load_audio

    clips = [load_audio(path, 16_000).samples for path in esc50_clips[:2]]
    gap = np.zeros(16_000 * 2, dtype=np.float32)
    buffer = io.BytesIO()
    soundfile.write(buffer, np.concatenate([gap, clips[0], gap, clips[1]]), 16_000, format="FLAC")
    response = requests.post(
        f"{server.url}/api/detect",
        files={"audio": ("long.flac", buffer.getvalue())},
        data={"labels": "dog, siren", "background": "rain", "window_s": "5", "hop_s": "2.5", "threshold": "0"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["duration_s"] == pytest.approx(14.0) and len(body["windows"]) == 5
    assert body["labels"] == ["dog", "siren", "rain"] and body["elapsed_ms"] > 0
    assert {event["label"] for event in body["events"]} == {"dog", "siren"}
    bad_hop = requests.post(
        f"{server.url}/api/detect",
        files={"audio": ("a.flac", buffer.getvalue())},
        data={"labels": "a, b", "window_s": "2", "hop_s": "3"},
    )
    assert_error(bad_hop, 422, "invalid_configuration")
    assert_error(
        requests.post(
            f"{server.url}/api/detect",
            files={"audio": ("a.flac", buffer.getvalue())},
            data={"labels": "a, b", "window_s": "0"},
        ),
        422,
        "invalid_request",
    )


def test_detect_gates_quiet_windows_and_counts_them_in_the_metrics(server, esc50_clips):
    from soundsift.core.audio import load_audio

    clip = load_audio(esc50_clips[0], 16_000).samples
    buffer = io.BytesIO()
    soundfile.write(buffer, np.concatenate([clip, np.zeros(16_000 * 6, dtype=np.float32)]), 16_000, format="FLAC")

    def gated_windows_counted() -> float:
        text = requests.get(f"{server.url}/metrics").text
        found = re.search(r'^soundsift_detect_windows_total\{outcome="gated"\} (\S+)$', text, re.MULTILINE)
        return float(found.group(1)) if found else 0.0

    before = gated_windows_counted()
    data = {"labels": "dog, siren", "window_s": "2", "hop_s": "2", "min_dbfs": "-60"}
    response = requests.post(f"{server.url}/api/detect", files={"audio": ("a.flac", buffer.getvalue())}, data=data)
    assert response.status_code == 200, response.text
    body = response.json()
    gated = [window["gated"] for window in body["windows"]]
    assert gated[-3:] == [True] * 3 and body["gated_windows"] == sum(gated) < len(gated)  # the silence at the end
    assert gated_windows_counted() == before + body["gated_windows"]
    too_loud = requests.post(
        f"{server.url}/api/detect", files={"audio": ("a.flac", buffer.getvalue())}, data={**data, "min_dbfs": "5"}
    )
    assert_error(too_loud, 422, "invalid_request")


def test_presets_translation_and_original_labels_over_http(keyed_server, esc50_clips):
    url, auth = f"{keyed_server.url}/api/classify", {"Authorization": "Bearer s3cret-key"}
    sample = {"audio": (esc50_clips[0].name, esc50_clips[0].read_bytes())}
    response = requests.post(url, files=sample, data={"preset": "nature_zh"}, headers=auth)
    assert response.status_code == 200, response.text
    body = response.json()
    assert {s["label"] for s in body["scores"]} == {"鸟叫声", "雨声", "雷声", "风声", "流水声", "虫鸣", "蛙鸣"}
    rain = next(s for s in body["scores"] if s["label"] == "雨声")
    assert "Rain" in rain["translated_as"] and "This is a sound of Rain." in rain["prompt_text"]
    unknown = requests.post(url, files=sample, data={"labels": "狗叫声, 量子计算机"}, headers=auth).json()
    assert any("量子计算机" in warning for warning in unknown["warnings"])
    both = requests.post(url, files=sample, data={"labels": "a, b", "preset": "office"}, headers=auth)
    assert_error(both, 422, "invalid_labels")
    assert_error(requests.post(url, files=sample, data={"preset": "kitchen"}, headers=auth), 422, "invalid_labels")


def test_a_full_queue_answers_503_with_retry_after(tiny_model_dir, tmp_path):
    settings = {"max_queue": "1", "micro_batch_size": "1", "micro_batch_wait_ms": "0"}
    with running_server(tiny_model_dir, tmp_path / "server.log", **settings) as process:
        clip = wav_bytes(60, rate=8_000)
        barrier = threading.Barrier(24)

        def call(_: int) -> requests.Response:
            barrier.wait()
            return requests.post(
                f"{process.url}/api/classify", files={"audio": ("long.wav", clip)}, data={"labels": "a, b"}, timeout=120
            )

        with concurrent.futures.ThreadPoolExecutor(24) as pool:
            responses = list(pool.map(call, range(24)))
        metrics = requests.get(f"{process.url}/metrics").text
    refused = [r for r in responses if r.status_code == 503]
    assert refused and all(r.status_code in (200, 503) for r in responses)
    assert refused[0].headers["Retry-After"] == "1" and refused[0].json()["error"]["code"] == "overloaded"
    assert any(r.status_code == 200 for r in responses)
    assert 'soundsift_requests_total{endpoint="/api/classify",status="503"}' in metrics


def test_two_static_int8_replicas_of_one_thread_serve(tiny_model_dir, tmp_path, esc50_clips):
    """--replicas 2 --threads 1 on the onnx backend with --quantize int8-static (exported on first
    use, calibrated on the bundled examples): both replicas answer, and a layout that asks for more
    threads than cores is refused at start with the reason."""
    settings = {"backend": "onnx", "quantize": "int8-static", "replicas": "2", "threads": "1", "cache": str(tmp_path)}
    with running_server(tiny_model_dir, tmp_path / "server.log", **settings) as process:
        assert requests.get(f"{process.url}/api/info", timeout=10).json()["devices"] == ["cpu", "cpu"]
        audio = esc50_clips[0].read_bytes()

        def classify(_: int) -> requests.Response:
            return requests.post(
                f"{process.url}/api/classify",
                files={"audio": ("clip.wav", audio)},
                data={"labels": "dog, rain"},
                timeout=60,
            )

        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(classify, range(8)))
        assert all(answer.status_code == 200 for answer in answers)
        assert {answer.json()["top_label"] for answer in answers} <= {"dog", "rain"}
    crowded = ServerProcess(tiny_model_dir, tmp_path / "crowded.log", backend="onnx", replicas="64", threads="64")
    assert crowded.process.wait(timeout=120) != 0
    assert "intra-op threads on" in crowded.log() and "--oversubscribe" in crowded.log()
    crowded.terminate()


def test_the_url_is_printed_once_the_port_answers_and_names_the_port_bound(tiny_model_dir):
    """--port 0 picks a free port: the printed URL must be the one bound, and answer at once."""
    env = {**os.environ, "SOUNDSIFT_MODEL": str(tiny_model_dir), "SOUNDSIFT_DEVICE": "cpu"}
    process = subprocess.Popen(
        [sys.executable, "-m", "soundsift", "serve", "--port", "0", "--no-ui"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        url = None
        deadline = time.monotonic() + 120
        while url is None and time.monotonic() < deadline and process.poll() is None:
            line = process.stdout.readline()
            if match := re.search(r"Running on local URL: (http://127\.0\.0\.1:(\d+))", line):
                url, port = match.group(1), int(match.group(2))
        assert url is not None, "no URL printed"
        assert port != 0
        assert requests.get(f"{url}/readyz", timeout=5).status_code == 200
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
