"""Items 3, 4 and 7: clips that decode to nothing, decompression bombs and truncated files get typed
errors, fail alone, and never grow the server beyond its budget."""

from __future__ import annotations

import concurrent.futures
import io
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import requests
import soundfile

from soundsift.cli.main import main
from soundsift.core.audio import AudioLimits, load_audio, stream_audio
from soundsift.errors import AudioDecodeError, AudioTooLargeError, AudioTooLongError, AudioTooShortError
from tests.data.audio import silent_flac, tone, wav_bytes, with_flac_total_samples, write_pyav
from tests.security.conftest import AUTH, assert_error, process_memory_kb
from tests.server_process import running_server

pytestmark = pytest.mark.slow  # real server processes and a 0.5 MB bomb

ONE_SAMPLE_AT_384K = wav_bytes(1 / 384_000, rate=384_000)


@pytest.fixture(scope="module")
def bomb() -> bytes:
    """600 s of 8-channel 96 kHz silence: about 0.5 MB of FLAC, 1.8 GB of float32 when decoded."""
    return silent_flac(600, 96_000, 8)


@pytest.fixture(scope="module")
def truncated_flac() -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, tone(5.0, 44_100), 44_100, format="FLAC")
    return buffer.getvalue()[: len(buffer.getvalue()) // 2]


@pytest.fixture(scope="module")
def truncated_mp3(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, tone(5.0, 44_100), 44_100, format="MP3")
    return buffer.getvalue()[: len(buffer.getvalue()) // 2]


# ---- the library -----------------------------------------------------------------------------------


def test_a_clip_with_no_samples_left_after_resampling_is_too_short():
    with pytest.raises(AudioTooShortError, match="1 sample.* at 384000 Hz leave nothing at 48000 Hz"):
        load_audio(ONE_SAMPLE_AT_384K, 48_000)
    with pytest.raises(AudioTooShortError, match="less than the minimum of 10 ms"):
        load_audio((np.zeros(100, dtype=np.float32), 48_000), 48_000, limits=AudioLimits(min_duration_s=0.01))


def test_a_bomb_is_refused_from_its_header_before_decoding(bomb):
    # 1,843 MB is what the header declares (600 s x 96 kHz x 8 channels x 4 bytes); a refusal made
    # while decoding would name the size decoded so far, just past the limit.
    with pytest.raises(AudioTooLargeError, match="1,843 MB.*limit is 512 MB"):
        load_audio(bomb, 48_000, limits=AudioLimits(max_decoded_mb=512))
    # "Before decoding" is decided by the order of the work, not by a stopwatch: stream_audio decodes
    # lazily, block by block, and raises what the header reveals from the call itself, before it
    # hands out a single block.
    with pytest.raises(AudioTooLargeError, match="1,843 MB.*limit is 512 MB"):
        stream_audio(bomb, 48_000, limits=AudioLimits(max_decoded_mb=512))


def test_a_header_that_hides_the_length_is_caught_while_decoding(tmp_path: Path):
    # ADTS AAC carries no duration: only decoding tells how long it is.
    path = write_pyav(tmp_path / "stream.aac", tone(20.0, 48_000, channels=2), 48_000, "aac", container_format="adts")
    with pytest.raises(AudioTooLargeError, match="limit is 2 MB"):
        load_audio(path, 48_000, limits=AudioLimits(max_decoded_mb=2))
    with pytest.raises(AudioTooLongError, match="limit of 5 s"):
        load_audio(path, 48_000, limits=AudioLimits(max_duration_s=5))


def test_too_many_channels_are_refused_before_decoding():
    with pytest.raises(AudioTooLargeError, match="8 channels; the limit is 4"):
        load_audio(silent_flac(1, 8_000, 8), 48_000, limits=AudioLimits(max_channels=4))


def test_truncated_flac_is_a_typed_error(truncated_flac):
    with pytest.raises(AudioDecodeError, match="corrupt or truncated"):
        load_audio(truncated_flac, 48_000)


def test_truncated_mp3_is_a_typed_error_every_time(truncated_mp3):
    # libsndfile's block reader padded the missing tail with uninitialised memory; now the short read
    # is seen, and the file is reported as truncated.
    for _ in range(3):
        with pytest.raises(AudioDecodeError, match="truncated"):
            load_audio(truncated_mp3, 48_000)


def test_decoding_is_deterministic_for_a_slightly_short_mp3():
    buffer = io.BytesIO()
    soundfile.write(buffer, tone(5.0, 44_100), 44_100, format="MP3")
    data = buffer.getvalue()[: int(len(buffer.getvalue()) * 0.97)]
    first = load_audio(data, 48_000).samples
    for _ in range(3):
        np.testing.assert_array_equal(load_audio(data, 48_000).samples, first)


def test_classify_batch_reports_bad_clips_in_place_and_scores_the_rest(classifier, esc50_clips, truncated_flac):
    inputs = [esc50_clips[0], ONE_SAMPLE_AT_384K, truncated_flac, esc50_clips[1], b""]
    results = classifier.classify_batch(inputs, "dog, rain", errors="return")
    assert [getattr(result, "error", None) for result in results] == [
        None,
        "audio_too_short",
        "audio_decode_error",
        None,
        "empty_audio",
    ]
    alone = classifier.classify(esc50_clips[1], "dog, rain")
    assert results[3].top_label == alone.top_label
    assert results[3].confidence == pytest.approx(alone.confidence, abs=1e-5)


def test_cli_classify_and_batch_go_on_past_bad_files(tiny_model_dir, esc50_clips, truncated_flac, tmp_path, capsys):
    bad = tmp_path / "one-sample.wav"
    bad.write_bytes(ONE_SAMPLE_AT_384K)
    cut = tmp_path / "cut.flac"
    cut.write_bytes(truncated_flac)
    model = ["--model", str(tiny_model_dir), "--device", "cpu", "--labels", "dog, rain"]
    assert main(["classify", str(bad), str(cut), str(esc50_clips[0]), *model]) == 1
    out = capsys.readouterr().out
    assert "audio_too_short" in out and "audio_decode_error" in out and "→" in out
    folder = tmp_path / "in"
    folder.mkdir()
    for path in (bad, cut, esc50_clips[0]):
        (folder / path.name).write_bytes(path.read_bytes())
    results = tmp_path / "rows.jsonl"
    assert main(["batch", str(folder), "--out", str(results), *model]) == 1
    # The rerun finds every file done (error rows included) instead of stopping at the bad one again.
    assert main(["batch", str(folder), "--out", str(results), *model]) == 0
    assert "3 already done" in capsys.readouterr().err
    rows = [line for line in results.read_text().splitlines() if line]
    assert len(rows) == 3
    assert sum('"error": null' in row for row in rows) == 1


# ---- the server --------------------------------------------------------------------------------------


def test_a_clip_that_decodes_to_nothing_fails_alone_in_its_micro_batch(keyed_server, esc50_clips):
    barrier = threading.Barrier(8)

    def call(index: int) -> requests.Response:
        audio = (
            ("bad.wav", ONE_SAMPLE_AT_384K)
            if index == 3
            else (esc50_clips[index].name, esc50_clips[index].read_bytes())
        )
        barrier.wait()
        return requests.post(
            f"{keyed_server.url}/api/classify",
            files={"audio": audio},
            data={"labels": "dog, rain"},
            headers=AUTH,
            timeout=60,
        )

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(call, range(8)))
    assert_error(responses[3], 422, "audio_too_short")
    assert [r.status_code for i, r in enumerate(responses) if i != 3] == [200] * 7
    batch = requests.post(
        f"{keyed_server.url}/api/classify/batch",
        files=[("audio", ("bad.wav", ONE_SAMPLE_AT_384K)), ("audio", ("good.wav", esc50_clips[0].read_bytes()))],
        data={"labels": "dog, rain"},
        headers=AUTH,
        timeout=60,
    )
    assert batch.status_code == 200
    first, second = batch.json()["results"]
    assert first["error"] == "audio_too_short" and second["top_label"] in ("dog", "rain")


def test_truncated_files_get_a_4xx(keyed_server, truncated_flac, truncated_mp3):
    for name, data in (("cut.flac", truncated_flac), ("cut.mp3", truncated_mp3)):
        response = requests.post(
            f"{keyed_server.url}/api/classify",
            files={"audio": (name, data)},
            data={"labels": "a, b"},
            headers=AUTH,
            timeout=60,
        )
        assert_error(response, 415, "audio_decode_error")


def test_bombs_are_refused_at_once_and_the_server_stays_within_its_budget(tiny_model_dir, tmp_path, bomb):
    with running_server(tiny_model_dir, tmp_path / "server.log", max_decoded_mb="256", decode_workers="2") as server:
        before = process_memory_kb(server.process.pid)
        lying = with_flac_total_samples(bomb, 0)  # "length unknown": must not be trusted either
        samples = [("bomb.flac", bomb), ("lying.flac", lying)] * 3

        def call(sample: tuple[str, bytes]) -> tuple[requests.Response, float]:
            started = time.monotonic()
            response = requests.post(
                f"{server.url}/api/classify", files={"audio": sample}, data={"labels": "a, b"}, timeout=60
            )
            return response, time.monotonic() - started

        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            answers = list(pool.map(call, samples))
        after = process_memory_kb(server.process.pid)
    for response, seconds in answers:
        assert response.status_code == 422 and response.json()["error"]["code"] in ("audio_too_large", "audio_too_long")
        assert seconds < 30  # a hang guard; the README's figure is the printed slowest refusal
    growth_mb = (after["VmHWM"] - before["VmHWM"]) / 1024
    # Decoding either bomb in full would take 1.8 GB; the budget is 256 MB per input.
    assert growth_mb < 256, f"peak memory grew by {growth_mb:.0f} MB"
    print(f"bombs: server peak RSS grew by {growth_mb:.1f} MB; slowest refusal {max(s for _, s in answers):.3f} s")
