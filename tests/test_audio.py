"""Decoding every supported format, and a typed error for every kind of bad input."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import soundfile

from soundsift.core.audio import AudioLimits, load_audio
from soundsift.errors import AudioDecodeError, AudioTooLongError, EmptyAudioError, NonFiniteAudioError
from tests.data.audio import tone, write_pyav, write_soundfile, write_video_only

RATE = 48_000


def _assert_tone(decoded, seconds: float, tolerance: float = 0.05) -> None:
    assert decoded.sample_rate == RATE
    assert decoded.samples.dtype == np.float32 and decoded.samples.ndim == 1
    assert abs(decoded.duration_s - seconds) <= tolerance
    assert 0.05 < float(np.max(np.abs(decoded.samples))) <= 1.0
    assert not decoded.silent


@pytest.mark.parametrize(
    ("name", "rate", "options"),
    [
        ("pcm16.wav", 16_000, {"subtype": "PCM_16"}),
        ("pcm24.wav", 44_100, {"subtype": "PCM_24"}),
        ("float.wav", 22_050, {"subtype": "FLOAT"}),
        ("lossless.flac", 44_100, {}),
        ("vorbis.ogg", 44_100, {"format": "OGG", "subtype": "VORBIS"}),
    ],
)
def test_soundfile_formats(tmp_path: Path, name: str, rate: int, options: dict):
    path = write_soundfile(tmp_path / name, tone(1.5, rate, channels=2), rate, **options)
    _assert_tone(load_audio(path, RATE), 1.5)


@pytest.mark.parametrize(
    ("name", "codec", "options"),
    [
        ("speech.mp3", "libmp3lame", {}),
        ("music.m4a", "aac", {}),
        ("voice.opus", "libopus", {"container_format": "ogg"}),
        ("browser-take.webm", "libopus", {}),
        ("film.mp4", "aac", {"video": True}),
        ("film.mkv", "aac", {"video": True}),
    ],
)
def test_pyav_formats(tmp_path: Path, name: str, codec: str, options: dict):
    rate = RATE if codec == "libopus" else 44_100
    path = write_pyav(tmp_path / name, tone(1.5, rate, channels=2), rate, codec, **options)
    _assert_tone(load_audio(path, RATE), 1.5)


def test_real_esc50_clip_is_resampled_from_16k(esc50_clips):
    assert soundfile.info(esc50_clips[0]).samplerate == 16_000
    decoded = load_audio(esc50_clips[0], RATE)
    assert decoded.sample_rate == RATE and abs(decoded.duration_s - 5.0) < 1e-3


def test_bytes_file_object_and_array_inputs_agree(tmp_path: Path):
    samples = tone(1.0, 16_000)
    path = write_soundfile(tmp_path / "a.wav", samples, 16_000, subtype="FLOAT")
    from_path = load_audio(path, RATE).samples
    from_bytes = load_audio(path.read_bytes(), RATE).samples
    with open(path, "rb") as handle:
        from_handle = load_audio(handle, RATE).samples
    from_array = load_audio((samples[:, 0], 16_000), RATE).samples
    for other in (from_bytes, from_handle, from_array):
        np.testing.assert_array_equal(from_path, other)


def test_stereo_is_downmixed_by_averaging():
    left = np.full(4_800, 0.5, dtype=np.float32)
    decoded = load_audio((np.stack([left, -left / 5], axis=1), RATE), RATE)
    np.testing.assert_allclose(decoded.samples, 0.2, atol=1e-6)


def test_integer_arrays_are_scaled_to_unit_range():
    decoded = load_audio((np.full(4_800, -32768, dtype=np.int16), RATE), RATE)
    np.testing.assert_allclose(decoded.samples, -1.0)
    decoded = load_audio((np.full(4_800, 192, dtype=np.uint8), RATE), RATE)
    np.testing.assert_allclose(decoded.samples, 0.5)


def test_silence_is_decoded_and_flagged():
    decoded = load_audio((np.zeros(RATE, dtype=np.float32), RATE), RATE)
    assert decoded.silent and decoded.duration_s == 1.0


def test_empty_file(tmp_path: Path):
    path = tmp_path / "empty.wav"
    path.touch()
    with pytest.raises(EmptyAudioError, match="empty.wav"):
        load_audio(path, RATE)


def test_zero_length_wav(tmp_path: Path):
    path = write_soundfile(tmp_path / "zero.wav", np.zeros((0, 1), dtype=np.float32), 16_000)
    with pytest.raises(EmptyAudioError, match="zero.wav"):
        load_audio(path, RATE)


def test_empty_bytes_and_array():
    with pytest.raises(EmptyAudioError):
        load_audio(b"", RATE)
    with pytest.raises(EmptyAudioError):
        load_audio((np.zeros(0, dtype=np.float32), RATE), RATE)


def test_truncated_wav(tmp_path: Path):
    whole = write_soundfile(tmp_path / "whole.wav", tone(2.0, 16_000), 16_000).read_bytes()
    path = tmp_path / "cut.wav"
    path.write_bytes(whole[: len(whole) // 3])
    with pytest.raises(AudioDecodeError, match="cut.wav.*truncated"):
        load_audio(path, RATE)


def test_corrupt_compressed_file(tmp_path: Path):
    good = write_pyav(tmp_path / "good.m4a", tone(2.0, 44_100), 44_100, "aac").read_bytes()
    path = tmp_path / "bad.m4a"
    path.write_bytes(good[:64] + bytes(len(good) - 64))
    with pytest.raises(AudioDecodeError, match="bad.m4a"):
        load_audio(path, RATE)


def test_non_audio_file(tmp_path: Path):
    path = tmp_path / "notes.txt"
    path.write_text("this is not audio\n" * 50)
    with pytest.raises(AudioDecodeError, match="notes.txt: .*(not a readable audio|no audio track)"):
        load_audio(path, RATE)


def test_video_without_audio_track(tmp_path: Path):
    path = write_video_only(tmp_path / "silent-film.mp4")
    with pytest.raises(AudioDecodeError, match="no audio track"):
        load_audio(path, RATE)


def test_missing_file(tmp_path: Path):
    with pytest.raises(AudioDecodeError, match="no such file"):
        load_audio(tmp_path / "nowhere.wav", RATE)


def test_nan_and_inf_samples(tmp_path: Path):
    samples = tone(1.0, 16_000)
    samples[100] = np.nan
    path = write_soundfile(tmp_path / "nan.wav", samples, 16_000, subtype="FLOAT")
    with pytest.raises(NonFiniteAudioError, match="nan.wav"):
        load_audio(path, RATE)
    with pytest.raises(NonFiniteAudioError):
        load_audio((np.array([0.0, np.inf], dtype=np.float32), RATE), RATE)


def test_too_long_is_rejected_before_decoding(tmp_path: Path):
    path = write_soundfile(tmp_path / "long.flac", tone(12.0, 8_000), 8_000)
    with pytest.raises(AudioTooLongError, match="12.0 s, more than the limit of 10 s"):
        load_audio(path, RATE, limits=AudioLimits(max_duration_s=10))
    compressed = write_pyav(tmp_path / "long.mp3", tone(12.0, 16_000), 16_000, "libmp3lame")
    with pytest.raises(AudioTooLongError, match="long.mp3"):
        load_audio(compressed, RATE, limits=AudioLimits(max_duration_s=10))


def test_bad_array_inputs():
    with pytest.raises(AudioDecodeError, match="sample rate"):
        load_audio((np.zeros(10), 0), RATE)
    with pytest.raises(AudioDecodeError, match="1-D"):
        load_audio((np.zeros((2, 2, 2)), RATE), RATE)
    with pytest.raises(AudioDecodeError, match="unsupported input type"):
        load_audio(12345, RATE)


def test_file_object_name_is_used_in_errors():
    handle = io.BytesIO(b"garbage" * 100)
    handle.name = "upload.wav"
    with pytest.raises(AudioDecodeError, match="upload.wav"):
        load_audio(handle, RATE)
