"""Audio in: decode any supported input to mono float32 at the model's sample rate.

soundfile (libsndfile) reads WAV/FLAC/OGG/MP3 and friends; PyAV (bundled FFmpeg) reads everything
else (M4A/AAC, Opus, WebM, video containers), so no system ffmpeg is needed. Resampling is soxr.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import av
import numpy as np
import soundfile
import soxr

from soundsift.errors import (
    AudioDecodeError,
    AudioTooLongError,
    EmptyAudioError,
    NonFiniteAudioError,
)

AudioInput = str | os.PathLike | bytes | bytearray | BinaryIO | tuple
"""A path, raw file bytes, a binary file object, or ``(samples, sample_rate)`` with a numpy array."""

# A container may declare a duration slightly above what decodes (encoder priming, rounding);
# anything shorter than this share of the declared duration is a truncated file.
_TRUNCATION_TOLERANCE = 0.9
# Block length when a whole file is decoded at once: few, large reads.
_WHOLE_FILE_BLOCK_S = 60.0


@dataclass(frozen=True)
class DecodedAudio:
    """Mono float32 samples at ``sample_rate`` with where they came from."""

    samples: np.ndarray
    sample_rate: int
    source: str
    silent: bool

    @property
    def duration_s(self) -> float:
        return len(self.samples) / self.sample_rate


def describe_source(audio: AudioInput) -> str:
    """A short human name for an input, used in messages and results."""
    if isinstance(audio, (str, os.PathLike)):
        return str(audio)
    if isinstance(audio, (bytes, bytearray)):
        return f"<{len(audio)} bytes>"
    if isinstance(audio, tuple):
        return "<array>"
    return str(getattr(audio, "name", "<file object>"))


def load_audio(
    audio: AudioInput,
    sample_rate: int,
    *,
    max_duration_s: float | None = None,
    silence_db: float = -60.0,
    source: str | None = None,
) -> DecodedAudio:
    """Decode, downmix to mono, convert to float32 and resample to ``sample_rate``.

    Raises EmptyAudioError, AudioDecodeError, AudioTooLongError or NonFiniteAudioError, each
    naming the input.
    """
    name = source or describe_source(audio)
    if isinstance(audio, tuple):
        samples, rate = _from_array(audio, name)
    else:
        samples, rate = _decode(_as_readable(audio, name), name, max_duration_s)
    samples = _to_mono_float32(samples)
    if samples.size == 0:
        raise EmptyAudioError("the audio has no samples", source=name)
    if not np.all(np.isfinite(samples)):
        raise NonFiniteAudioError("the audio contains NaN or infinite samples", source=name)
    _check_duration(len(samples) / rate, max_duration_s, name)
    samples = resample(samples, rate, sample_rate)
    return DecodedAudio(samples, sample_rate, name, is_silent(samples, silence_db))


def resample(samples: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """High-quality resampling with soxr; a no-op when the rates match."""
    if from_rate == to_rate:
        return samples
    return soxr.resample(samples, from_rate, to_rate, quality="HQ").astype(np.float32, copy=False)


def is_silent(samples: np.ndarray, silence_db: float) -> bool:
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))
    return rms <= 10.0 ** (silence_db / 20.0)


def _from_array(audio: tuple, name: str) -> tuple[np.ndarray, int]:
    if len(audio) != 2:
        raise AudioDecodeError("an array input must be a (samples, sample_rate) pair", source=name)
    samples, rate = audio
    samples = np.asarray(samples)
    if not isinstance(rate, (int, np.integer)) or rate <= 0:
        raise AudioDecodeError(f"sample rate must be a positive integer, got {rate!r}", source=name)
    if samples.ndim not in (1, 2) or not (np.issubdtype(samples.dtype, np.number)):
        raise AudioDecodeError(
            f"samples must be a numeric 1-D (mono) or 2-D (frames, channels) array, got shape {samples.shape}",
            source=name,
        )
    return samples, int(rate)


def _as_readable(audio: AudioInput, name: str) -> Path | BinaryIO:
    if isinstance(audio, (str, os.PathLike)):
        path = Path(audio)
        if not path.is_file():
            raise AudioDecodeError("no such file", source=name)
        if path.stat().st_size == 0:
            raise EmptyAudioError("the file is empty (0 bytes)", source=name)
        return path
    if isinstance(audio, (bytes, bytearray)):
        if not audio:
            raise EmptyAudioError("no bytes were given", source=name)
        return io.BytesIO(audio)
    if hasattr(audio, "read"):
        data = audio.read()
        if not data:
            raise EmptyAudioError("the file object is empty", source=name)
        return io.BytesIO(data)
    raise AudioDecodeError(f"unsupported input type {type(audio).__name__}", source=name)


def _decode(readable: Path | BinaryIO, name: str, max_duration_s: float | None) -> tuple[np.ndarray, int]:
    """The whole file as (frames, channels) float32, by draining the same opener `stream_audio` uses."""
    opened = _open_blocks(readable, name, max_duration_s, _WHOLE_FILE_BLOCK_S)
    chunks = list(opened.blocks)
    if not chunks:
        raise EmptyAudioError("the audio has no samples", source=name)
    samples = np.concatenate(chunks, axis=0)
    held_s = len(samples) / opened.rate
    if opened.declared_s and held_s < opened.declared_s * _TRUNCATION_TOLERANCE - opened.truncation_slack_s:
        raise AudioDecodeError(
            f"the file is truncated: it declares {opened.declared_s:.2f} s but holds {held_s:.2f} s", source=name
        )
    return samples, opened.rate


def _check_wav_data_size(readable: Path | BinaryIO, name: str) -> None:
    """libsndfile quietly shortens a WAV whose data chunk is cut off; compare with the header."""
    with contextlib.ExitStack() as stack:
        handle = stack.enter_context(open(readable, "rb")) if isinstance(readable, Path) else readable
        _scan_wav_header(handle, name)
        if not isinstance(readable, Path):
            handle.seek(0)


def _scan_wav_header(handle: BinaryIO, name: str) -> None:
    handle.seek(0, io.SEEK_END)
    file_size = handle.tell()
    handle.seek(0)
    if handle.read(12)[8:12] != b"WAVE":
        return
    offset = 12
    while offset + 8 <= file_size:
        handle.seek(offset)
        chunk_id, chunk_size = handle.read(4), int.from_bytes(handle.read(4), "little")
        if chunk_id == b"data":
            available = file_size - offset - 8
            # 0 and 0xFFFFFFFF mark streamed WAVs whose writer never filled in the size.
            if chunk_size not in (0, 0xFFFFFFFF) and available < chunk_size * _TRUNCATION_TOLERANCE:
                raise AudioDecodeError(
                    f"the file is truncated: its header declares {chunk_size} bytes of audio "
                    f"but only {available} are present",
                    source=name,
                )
            return
        offset += 8 + chunk_size + (chunk_size % 2)


def _decode_stream(
    container: av.container.InputContainer, stream: av.AudioStream, name: str, max_duration_s: float | None
) -> Iterator[np.ndarray]:
    """Yield (frames, channels) float32 blocks; stops with an error once past the duration limit."""
    to_float = av.AudioResampler(format="fltp")
    decoded_frames = 0
    try:
        for packet in container.demux(stream):
            for frame in packet.decode():
                for converted in to_float.resample(frame):
                    block = converted.to_ndarray().T
                    decoded_frames += len(block)
                    yield block
                if max_duration_s is not None and decoded_frames / frame.sample_rate > max_duration_s:
                    _check_duration(decoded_frames / frame.sample_rate, max_duration_s, name)
    except av.error.FFmpegError as error:
        raise AudioDecodeError(f"the audio is corrupt ({_reason(error)})", source=name) from None


def _declared_duration(container: av.container.InputContainer, stream: av.AudioStream) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return None


def _to_mono_float32(samples: np.ndarray) -> np.ndarray:
    if np.issubdtype(samples.dtype, np.integer):
        info = np.iinfo(samples.dtype)
        half_range = (float(info.max) - float(info.min) + 1.0) / 2.0
        offset = float(info.min) + half_range
        samples = ((samples.astype(np.float64) - offset) / half_range).astype(np.float32)
    samples = samples.astype(np.float32, copy=False)
    if samples.ndim == 2:
        samples = samples.mean(axis=1, dtype=np.float32)
    return np.ascontiguousarray(samples)


def _check_duration(duration_s: float, max_duration_s: float | None, name: str) -> None:
    if max_duration_s is not None and duration_s > max_duration_s:
        raise AudioTooLongError(
            f"the audio lasts {duration_s:.1f} s, more than the limit of {max_duration_s:g} s "
            "(raise it with max_duration_s / --max-duration / SOUNDSIFT_MAX_DURATION_S)",
            source=name,
        )


def _reason(error: Exception) -> str:
    return getattr(error, "strerror", None) or str(error) or type(error).__name__


@dataclass
class AudioStream:
    """Mono float32 blocks at ``sample_rate``, decoded lazily; ``declared_duration_s`` when known."""

    blocks: Iterator[np.ndarray]
    sample_rate: int
    source: str
    declared_duration_s: float | None


def stream_audio(
    audio: AudioInput,
    sample_rate: int,
    *,
    max_duration_s: float | None = None,
    block_s: float = 10.0,
    source: str | None = None,
) -> AudioStream:
    """Decode block by block, downmixed and resampled as they come, so memory stays flat for
    hour-long recordings. Errors are the same typed errors as `load_audio`."""
    name = source or describe_source(audio)
    if isinstance(audio, tuple):
        samples, rate = _from_array(audio, name)
        declared = len(samples) / rate
        _check_duration(declared, max_duration_s, name)
        step = int(block_s * rate)
        raw = (samples[start : start + step] for start in range(0, len(samples), step))
    else:
        opened = _open_blocks(_as_readable(audio, name), name, max_duration_s, block_s)
        raw, rate, declared = opened.blocks, opened.rate, opened.declared_s
    return AudioStream(_resampled_blocks(raw, rate, sample_rate, name, max_duration_s), sample_rate, name, declared)


@dataclass
class _Opened:
    """An opened file: (frames, channels) float32 blocks at ``rate``, and what its header declares."""

    blocks: Iterator[np.ndarray]
    rate: int
    declared_s: float | None
    # How far below the tolerance a file may fall before it counts as truncated: libsndfile's frame
    # count is exact, compressed containers only estimate their duration.
    truncation_slack_s: float


def _open_blocks(readable: Path | BinaryIO, name: str, max_duration_s: float | None, block_s: float) -> _Opened:
    """soundfile (libsndfile) first, PyAV for everything else; rejects over-long files before decoding."""
    try:
        _check_wav_data_size(readable, name)
        handle = soundfile.SoundFile(readable)
    except soundfile.LibsndfileError:
        if not isinstance(readable, Path):
            readable.seek(0)
        opened = _pyav_blocks(readable, name, max_duration_s)
    else:

        def blocks() -> Iterator[np.ndarray]:
            with handle:
                yield from handle.blocks(
                    blocksize=max(1, int(block_s * handle.samplerate)), dtype="float32", always_2d=True
                )

        declared = handle.frames / handle.samplerate if handle.samplerate else None
        opened = _Opened(blocks(), handle.samplerate, declared, truncation_slack_s=0.0)
    if opened.declared_s is not None:
        _check_duration(opened.declared_s, max_duration_s, name)
    return opened


def _pyav_blocks(readable: Path | BinaryIO, name: str, max_duration_s: float | None) -> _Opened:
    try:
        container = av.open(str(readable) if isinstance(readable, Path) else readable, mode="r")
    except (av.error.FFmpegError, ValueError, OSError) as error:
        raise AudioDecodeError(f"not a readable audio or video file ({_reason(error)})", source=name) from None
    if not container.streams.audio:
        container.close()
        # FFmpeg opens some non-media files (e.g. plain text, as ANSI art) as video.
        raise AudioDecodeError("the file has no audio track (is it an audio or video file?)", source=name)
    stream = container.streams.audio[0]

    def blocks() -> Iterator[np.ndarray]:
        with container:
            yield from _decode_stream(container, stream, name, max_duration_s)

    rate = stream.codec_context.sample_rate or stream.rate
    return _Opened(blocks(), rate, _declared_duration(container, stream), truncation_slack_s=0.1)


def _resampled_blocks(
    raw: Iterator[np.ndarray], rate: int, sample_rate: int, name: str, max_duration_s: float | None
) -> Iterator[np.ndarray]:
    resampler = (
        soxr.ResampleStream(rate, sample_rate, 1, dtype="float32", quality="HQ") if rate != sample_rate else None
    )
    seen = 0
    for block in raw:
        mono = _to_mono_float32(block)
        if not np.all(np.isfinite(mono)):
            raise NonFiniteAudioError("the audio contains NaN or infinite samples", source=name)
        seen += len(mono)
        _check_duration(seen / rate, max_duration_s, name)
        out = resampler.resample_chunk(mono) if resampler else mono
        if len(out):
            yield out
    if seen == 0:
        raise EmptyAudioError("the audio has no samples", source=name)
    if resampler:
        tail = resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
        if len(tail):
            yield tail
