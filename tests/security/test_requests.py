"""Items 5, 6, 8, 9 and the HTTP side of 12: bounded detect, chunked uploads, label and text
limits, and clear 4xx answers for careless requests."""

from __future__ import annotations

import http.client
import re
import time

import pytest
import requests

from tests.data.audio import silent_flac, wav_bytes, with_flac_total_samples
from tests.security.conftest import AUTH, assert_error
from tests.server_process import ServerProcess, running_server

pytestmark = pytest.mark.slow  # a real server process

CLIP = ("clip.wav", wav_bytes(1.0))


def classify(server, data, files=None, **kwargs) -> requests.Response:
    return requests.post(
        f"{server.url}/api/classify", files=files or {"audio": CLIP}, data=data, headers=AUTH, timeout=60, **kwargs
    )


def detect(server, audio: tuple[str, bytes], data: dict, timeout: float = 60) -> requests.Response:
    return requests.post(f"{server.url}/api/detect", files={"audio": audio}, data=data, headers=AUTH, timeout=timeout)


# ---- item 5: detect ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"hop_s": "0.00001"}, "hop_s"),
        ({"hop_s": "0"}, "hop_s"),
        ({"window_s": "0.001"}, "window_s"),
        ({"window_s": "1e9"}, "window_s"),
        ({"smoothing_windows": "100000"}, "smoothing_windows"),
    ],
)
def test_detect_refuses_window_layouts_outside_the_allowed_ranges(keyed_server, fields, field):
    body = assert_error(detect(keyed_server, CLIP, {"labels": "a, b", **fields}), 422, "invalid_request")
    assert field in body["error"]["message"]


def test_detect_refuses_a_hop_longer_than_its_window(keyed_server):
    assert_error(
        detect(keyed_server, CLIP, {"labels": "a, b", "window_s": "2", "hop_s": "3"}), 422, "invalid_configuration"
    )


def test_a_ten_hour_recording_is_refused_from_its_header(keyed_server):
    ten_hours = with_flac_total_samples(silent_flac(1, 8_000, 1), 10 * 3600 * 8_000)
    started = time.monotonic()
    body = assert_error(detect(keyed_server, ("ten-hours.flac", ten_hours), {"labels": "a, b"}), 422, "audio_too_long")
    assert "36000.0 s" in body["error"]["message"] and time.monotonic() - started < 30  # a hang guard


def test_too_many_windows_are_refused_before_scoring(keyed_server):
    # 100 s at a 1 s hop is 96 windows; this server allows 40 per request.
    hundred_seconds = silent_flac(100, 8_000, 1)
    body = assert_error(
        detect(keyed_server, ("long.flac", hundred_seconds), {"labels": "a, b", "window_s": "5", "hop_s": "1"}),
        422,
        "audio_too_long",
    )
    assert "more than 40 windows" in body["error"]["message"]
    ok = detect(keyed_server, ("long.flac", hundred_seconds), {"labels": "a, b", "window_s": "5", "hop_s": "2.5"})
    assert ok.status_code == 200 and len(ok.json()["windows"]) == 39


def batched_clips(server: ServerProcess) -> float:
    metrics = requests.get(f"{server.url}/metrics", timeout=10).text
    return float(re.search(r"^soundsift_batch_size_sum ([\d.e+]+)$", metrics, re.MULTILINE).group(1))


def answered(server: ServerProcess, endpoint: str, status: int) -> float:
    """How many requests to ``endpoint`` the server has answered with ``status`` (its own metrics)."""
    metrics = requests.get(f"{server.url}/metrics", timeout=10).text
    pattern = rf'^soundsift_requests_total{{endpoint="{re.escape(endpoint)}",status="{status}"}} ([\d.e+]+)$'
    found = re.search(pattern, metrics, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


HANG_GUARD_S = 120  # only a hung server takes this long; no test waits for it otherwise


def _until(condition, what: str) -> None:
    deadline = time.monotonic() + HANG_GUARD_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"never saw {what} in {HANG_GUARD_S} s")
        time.sleep(0.02)


def test_detect_shares_the_queue_and_stops_when_the_client_goes_away(tiny_model_dir, tmp_path):
    """The client leaves once the run has scored its first batch (not after a guessed time), and the
    run's end is the server's own 499 answer, so nothing here depends on how fast this machine is."""
    settings = {
        "api_key": AUTH["Authorization"].split()[1],
        "max_queue": "16",
        "micro_batch_size": "16",
        "max_detect_windows": "100000",
        "max_detect_duration_s": "7200",
    }
    with running_server(tiny_model_dir, tmp_path / "server.log", **settings) as server:
        forty_minutes = ("long.flac", silent_flac(2400, 8_000, 1))  # 4,791 windows at a 0.5 s hop
        start = batched_clips(server)
        form = requests.Request(
            "POST",
            f"{server.url}/api/detect",
            files={"audio": forty_minutes},
            data={"labels": "a, b", "window_s": "1", "hop_s": "0.5"},
            headers=AUTH,
        ).prepare()
        client = http.client.HTTPConnection("127.0.0.1", server.port, timeout=HANG_GUARD_S)
        try:
            client.request("POST", "/api/detect", body=form.body, headers=dict(form.headers))
            _until(lambda: batched_clips(server) > start, "the detect run scoring its first batch")
            # While the run holds its places, the next model request cannot get one.
            busy = classify(server, {"labels": "a, b"})
            assert busy.status_code in (200, 503)
        finally:
            client.close()  # the client goes away mid-run, without reading the answer
        # The run notices after its current batch, however long that takes here; its 499 answer is its end.
        _until(lambda: answered(server, "/api/detect", 499) + answered(server, "/api/detect", 200), "the run's end")
        assert answered(server, "/api/detect", 499) == 1, "the run finished although the client had left"
        stopped_at = batched_clips(server)
        assert stopped_at - start < 4791, "detect scored every window although the client had left"
        assert classify(server, {"labels": "a, b"}).status_code == 200  # its places were given back
        assert batched_clips(server) == stopped_at + 1, "detect kept scoring after the client left"


# ---- item 6: upload size -----------------------------------------------------------------------------


def multipart_stream(megabytes: int):
    yield (
        b'--zz\r\nContent-Disposition: form-data; name="labels"\r\n\r\na, b\r\n'
        b'--zz\r\nContent-Disposition: form-data; name="audio"; filename="big.wav"\r\n\r\n'
    )
    for _ in range(megabytes):
        yield b"\0" * (1 << 20)
    yield b"\r\n--zz--\r\n"


def test_a_chunked_upload_is_cut_off_at_the_limit(keyed_server):
    started = time.monotonic()
    response = requests.post(
        f"{keyed_server.url}/api/classify",
        data=multipart_stream(300),
        headers={**AUTH, "Content-Type": "multipart/form-data; boundary=zz"},
        timeout=60,
    )
    body = assert_error(response, 413, "upload_too_large")
    assert "the limit is 1 MB (1,048,576 bytes" in body["error"]["message"]
    assert time.monotonic() - started < 60  # a hang guard


def test_a_declared_size_over_the_limit_is_refused_before_the_body(keyed_server):
    response = classify(keyed_server, {"labels": "a, b"}, files={"audio": ("big.wav", b"\0" * (2 << 20))})
    body = assert_error(response, 413, "upload_too_large")
    assert (
        body["error"]["message"].startswith("the request is 2,097,")
        and "limit is 1 MB (1,048,576 bytes" in (body["error"]["message"])
    )


def test_the_pages_upload_route_obeys_the_same_limit(keyed_server):
    response = requests.post(
        f"{keyed_server.url}/gradio_api/upload",
        data=multipart_stream(5),
        headers={**AUTH, "Content-Type": "multipart/form-data; boundary=zz"},
        timeout=60,
    )
    assert_error(response, 413, "upload_too_large")


# ---- item 8: labels and templates --------------------------------------------------------------------


def test_a_huge_template_is_refused(keyed_server):
    started = time.monotonic()
    response = classify(keyed_server, {"labels": "a, b", "template": "{} " + "x" * 900_000})
    body = assert_error(response, 422, "invalid_labels")
    assert "a template is 900003 characters; the limit is 300" in body["error"]["message"]
    assert len(response.content) < 1000 and time.monotonic() - started < 30  # a hang guard


def test_thousands_of_synonyms_are_refused_quickly(keyed_server):
    started = time.monotonic()
    many = " | ".join(f"s{i}" for i in range(50_000))
    response = classify(keyed_server, {"labels": f"{many}, other"})
    assert response.status_code in (413, 422) and time.monotonic() - started < 30  # a hang guard
    body = assert_error(
        classify(keyed_server, {"labels": " | ".join(f"s{i}" for i in range(40)) + ", b"}), 422, "invalid_labels"
    )
    assert "40 synonyms and exclusions; the limit is 16" in body["error"]["message"]


def test_total_label_text_is_bounded(keyed_server):
    labels = ", ".join(f"label number {i:04d} " + "y" * 150 for i in range(5))  # 5 labels, ~850 chars: fine
    assert classify(keyed_server, {"labels": labels}).status_code == 200
    response = classify(keyed_server, {"labels": [f"l{i} " + "z" * 190 for i in range(105)]})
    assert response.status_code == 422


def test_the_text_cache_stays_bounded(tiny_model_dir):
    from soundsift import Classifier

    classifier = Classifier(model=str(tiny_model_dir), device="cpu", text_cache_size=10)
    for start in range(0, 60, 6):
        classifier.prepare_labels([f"sound {i}" for i in range(start, start + 6)])
    assert classifier.label_encoder.cached_texts == 10


# ---- item 9: text edge cases ------------------------------------------------------------------------


def test_a_lone_surrogate_in_texts_is_a_4xx(keyed_server):
    response = requests.post(
        f"{keyed_server.url}/api/embed/text",
        data='{"texts": ["dog \\ud800 bark"]}',
        headers={**AUTH, "Content-Type": "application/json"},
        timeout=30,
    )
    body = assert_error(response, 422, "invalid_text")
    assert "not valid UTF-8" in body["error"]["message"]


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (b"dog \xff\xfe barking, cat", "not valid UTF-8"),
        (b"dog\x00, cat", "control character U+0000"),
        (b"dog\x1b[31m, cat", "control character U+001B"),
        ("dog \ufffd, cat".encode(), "U+FFFD"),
    ],
)
def test_broken_label_text_is_a_4xx_not_mojibake(keyed_server, labels, message):
    body = assert_error(classify(keyed_server, {"labels": labels}), 422, "invalid_text")
    assert message in body["error"]["message"]


def test_a_file_name_with_broken_bytes_comes_back_printable(keyed_server):
    body = (
        b'--zz\r\nContent-Disposition: form-data; name="labels"\r\n\r\na, b\r\n'
        b'--zz\r\nContent-Disposition: form-data; name="audio"; filename="../clip\xff\x07.wav"\r\n\r\n'
        + CLIP[1]
        + b"\r\n--zz--\r\n"
    )
    response = requests.post(
        f"{keyed_server.url}/api/classify",
        data=body,
        headers={**AUTH, "Content-Type": "multipart/form-data; boundary=zz"},
        timeout=30,
    )
    assert response.status_code == 200
    source = response.json()["source"]
    assert source.startswith("clip") and source.endswith(".wav") and "\x07" not in source and "/" not in source


# ---- item 12: careless requests ----------------------------------------------------------------------


def test_a_second_audio_file_on_the_single_file_route_is_refused(keyed_server):
    response = classify(keyed_server, {"labels": "a, b"}, files=[("audio", CLIP), ("audio", CLIP)])
    body = assert_error(response, 422, "too_many_files")
    assert "/api/classify/batch" in body["error"]["message"]
