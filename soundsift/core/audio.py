"""Audio in: decode any supported input to mono float32 at the model's sample rate.

soundfile (libsndfile) reads WAV/FLAC/OGG/MP3 and friends; PyAV (bundled FFmpeg) reads everything
else (M4A/AAC, Opus, WebM, video containers), so no system ffmpeg is needed. Resampling is soxr.

Every input is decoded as a stream of small blocks, each mixed down to mono and resampled before
the next is read, so memory is bounded by the *output* (mono, model rate, at most
``max_duration_s``), never by what a compressed file expands to. What the header declares
(channels x rate x duration) is checked against the limits before decoding starts, and the same
limits are enforced while decoding, because headers can lie.
"""

from __future__ import annotations

import contextlib
import io
import math
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
    AudioTooLargeError,
    AudioTooLongError,
    AudioTooShortError,
    ConfigurationError,
    EmptyAudioError,
    NonFiniteAudioError,
)

AudioInput = str | os.PathLike | bytes | bytearray | BinaryIO | tuple
"""A path, raw file bytes, a binary file object, or ``(samples, sample_rate)`` with a numpy array."""

# A container may declare a duration slightly above what decodes (encoder priming, rounding);
# anything shorter than this share of the declared duration is a truncated file.
_TRUNCATION_TOLERANCE = 0.9
# Largest block read at once (float32 frames x channels): blocks stay small whatever the channel
# count or rate, so a many-channel, high-rate file never needs a large temporary.
_BLOCK_BYTES = 4 << 20
_FLOAT32_BYTES = 4
# Room beyond a header's declared length before `_collect` falls back to concatenating.
_COLLECT_SLACK = 48_000


@dataclass(frozen=True)
class AudioLimits:
    """Bounds on one input. ``None`` means unbounded (for local files a user trusts)."""

    max_duration_s: float | None = None
    min_duration_s: float = 0.0
    max_decoded_mb: float | None = None
    max_channels: int | None = None


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
    if isinstance(audio, (tuple, np.ndarray)):
        return "<array>"
    return str(getattr(audio, "name", "<file object>"))


def is_array_input(audio: object) -> bool:
    """True for ``(samples, sample_rate)``: a pair whose second item is an integer rate, not a path."""
    return (
        isinstance(audio, tuple)
        and len(audio) == 2
        and isinstance(audio[1], (int, np.integer))
        and not isinstance(audio[1], bool)
        and not isinstance(audio[0], (str, bytes, os.PathLike))
    )


def load_audio(
    audio: AudioInput,
    sample_rate: int,
    *,
    limits: AudioLimits = AudioLimits(),
    silence_db: float = -60.0,
    source: str | None = None,
) -> DecodedAudio:
    """Decode, downmix to mono, convert to float32 and resample to ``sample_rate``.

    Raises EmptyAudioError, AudioTooShortError, AudioDecodeError, AudioTooLongError,
    AudioTooLargeError or NonFiniteAudioError, each naming the input.
    """
    stream = stream_audio(audio, sample_rate, limits=limits, source=source, check_truncation=True)
    expected = round(stream.declared_duration_s * sample_rate) if stream.declared_duration_s else None
    samples = _collect(stream.blocks, expected)
    duration = len(samples) / sample_rate
    if duration < limits.min_duration_s or len(samples) == 0:
        raise AudioTooShortError(
            f"the audio lasts {1000 * duration:.1f} ms at {sample_rate} Hz, less than the minimum of "
            f"{1000 * limits.min_duration_s:g} ms",
            source=stream.source,
        )
    return DecodedAudio(samples, sample_rate, stream.source, is_silent(samples, silence_db))


def _collect(blocks: Iterator[np.ndarray], expected: int | None) -> np.ndarray:
    """The blocks as one array. When the length is known it is filled in place: a list of blocks
    plus their concatenation would hold the whole output twice at the peak."""
    if not expected:
        collected = list(blocks)
        return np.concatenate(collected) if collected else np.zeros(0, dtype=np.float32)
    out = np.empty(expected + _COLLECT_SLACK, dtype=np.float32)
    filled, extra = 0, list[np.ndarray]()
    for block in blocks:
        if not extra and filled + len(block) <= len(out):
            out[filled : filled + len(block)] = block
            filled += len(block)
        else:
            extra.append(block)
    return np.concatenate([out[:filled], *extra]) if extra else out[:filled]


def resample(samples: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """High-quality resampling with soxr; a no-op when the rates match."""
    if from_rate == to_rate:
        return samples
    return soxr.resample(samples, from_rate, to_rate, quality="HQ").astype(np.float32, copy=False)


def level_dbfs(samples: np.ndarray) -> float:
    """The RMS level in dB relative to full scale (a full-scale sine is -3 dBFS); -inf when empty
    or all zero."""
    if len(samples) == 0:
        return -math.inf
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))
    return 20.0 * math.log10(rms) if rms > 0.0 else -math.inf


GATE_RANGE_DBFS = (-120.0, 0.0)
"""The silence gate's thresholds that make sense: below -120 dBFS is below 24-bit audio's own noise
floor; above 0 dBFS nothing is louder."""


def check_min_dbfs(min_dbfs: float | None) -> None:
    """A silence-gate threshold (None: no gate) is a number in `GATE_RANGE_DBFS`."""
    low, high = GATE_RANGE_DBFS
    if min_dbfs is not None and not (isinstance(min_dbfs, (int, float)) and low <= min_dbfs <= high):
        raise ConfigurationError(f"min_dbfs must be from {low:g} to {high:g} dBFS, not {min_dbfs!r}")


def is_silent(samples: np.ndarray, silence_db: float) -> bool:
    return level_dbfs(samples) <= silence_db


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
    limits: AudioLimits = AudioLimits(),
    block_s: float = 10.0,
    source: str | None = None,
    check_truncation: bool = False,
) -> AudioStream:
    """Decode block by block, downmixed and resampled as they come, so memory stays flat for
    hour-long recordings. Errors are the same typed errors as `load_audio`; those the header
    reveals are raised here, before any decoding."""
    name = source or describe_source(audio)
    if is_array_input(audio):
        opened = _array_blocks(audio, name, block_s)  # type: ignore[arg-type]
    else:
        opened = _open_blocks(_as_readable(audio, name), name, block_s)
    _check_header(opened, limits, name)
    blocks = _resampled_blocks(opened, sample_rate, name, limits)
    if check_truncation:
        blocks = _checked_for_truncation(blocks, opened, name)
    return AudioStream(blocks, sample_rate, name, opened.declared_s)


@dataclass
class _Opened:
    """An opened input: (frames, channels) blocks at ``rate``, and what its header declares.

    ``truncation_slack_s``: how far below the tolerance a file may fall before it counts as
    truncated (libsndfile's frame count is exact, compressed containers only estimate)."""

    blocks: Iterator[np.ndarray]
    rate: int
    channels: int
    declared_s: float | None
    truncation_slack_s: float
    decoded_frames: int = 0


def _array_blocks(audio: tuple, name: str, block_s: float) -> _Opened:
    samples, rate = audio
    samples = np.asarray(samples)
    if rate <= 0:
        raise AudioDecodeError(f"sample rate must be a positive integer, got {rate!r}", source=name)
    if samples.ndim not in (1, 2) or not np.issubdtype(samples.dtype, np.number):
        raise AudioDecodeError(
            f"samples must be a numeric 1-D (mono) or 2-D (frames, channels) array, got shape {samples.shape} "
            f"of {samples.dtype}",
            source=name,
        )
    rate = int(rate)
    step = max(1, int(block_s * rate))
    channels = 1 if samples.ndim == 1 else samples.shape[1]
    blocks = (samples[start : start + step] for start in range(0, len(samples), step))
    return _Opened(blocks, rate, channels, len(samples) / rate, truncation_slack_s=0.0)


def _as_readable(audio: AudioInput, name: str) -> Path | BinaryIO:
    if isinstance(audio, (str, os.PathLike)):
        path = Path(audio)
        if path.is_dir():
            raise AudioDecodeError("is a folder, not an audio file", source=name)
        if not path.is_file():
            raise AudioDecodeError("no such file", source=name)
        if path.stat().st_size == 0:
            raise EmptyAudioError("the file is empty (0 bytes)", source=name)
        return path
    if isinstance(audio, (bytes, bytearray)):
        if not audio:
            raise EmptyAudioError("no bytes were given", source=name)
        return io.BytesIO(audio)
    if isinstance(audio, np.ndarray):
        raise AudioDecodeError(
            "a bare array has no sample rate: pass (samples, sample_rate), e.g. (waveform, 16000)", source=name
        )
    if isinstance(audio, tuple):
        raise AudioDecodeError(
            "a tuple input must be (samples, sample_rate) with an integer rate; to classify several files pass a list",
            source=name,
        )
    if hasattr(audio, "read"):
        return _readable_file_object(audio, name)
    raise AudioDecodeError(
        f"unsupported input type {type(audio).__name__}: give a path, bytes, a binary file object or "
        "(samples, sample_rate)",
        source=name,
    )


def _readable_file_object(handle: BinaryIO, name: str) -> BinaryIO:
    """A seekable file object is decoded in place (uploads spooled to disk stay there); anything
    else is read into memory first, because both decoders seek."""
    seekable = getattr(handle, "seekable", None)
    if seekable is not None and seekable():
        start = handle.tell()
        empty = not handle.read(1)
        handle.seek(start)
        readable = handle if start == 0 else io.BytesIO(handle.read())
    else:
        data = handle.read()
        empty, readable = not data, io.BytesIO(data)
    if empty:
        raise EmptyAudioError("the file object is empty", source=name)
    return readable


def _open_blocks(readable: Path | BinaryIO, name: str, block_s: float) -> _Opened:
    """soundfile (libsndfile) first, PyAV for everything else."""
    try:
        _check_wav_data_size(readable, name)
        handle = soundfile.SoundFile(readable)
    except (soundfile.LibsndfileError, RuntimeError):
        if not isinstance(readable, Path):
            readable.seek(0)
        return _pyav_blocks(readable, name)
    if handle.samplerate <= 0 or handle.channels <= 0:
        handle.close()
        raise AudioDecodeError("the file declares no sample rate or no channels", source=name)
    declared = handle.frames / handle.samplerate if handle.samplerate and handle.frames > 0 else None
    frames_per_block = max(1, min(int(block_s * handle.samplerate), _BLOCK_BYTES // (4 * max(1, handle.channels))))
    return _Opened(
        _soundfile_blocks(handle, frames_per_block, name),
        handle.samplerate,
        handle.channels,
        declared,
        truncation_slack_s=0.0,
    )


def _soundfile_blocks(handle: soundfile.SoundFile, frames_per_block: int, name: str) -> Iterator[np.ndarray]:
    # read() returns only the frames really decoded; SoundFile.blocks() pads a short last block
    # with uninitialised memory, which made a truncated MP3's scores change from call to call.
    with handle:
        while True:
            try:
                block = handle.read(frames_per_block, dtype="float32", always_2d=True)
            except (soundfile.LibsndfileError, RuntimeError) as error:
                raise AudioDecodeError(f"the audio is corrupt or truncated ({_reason(error)})", source=name) from None
            if len(block) == 0:
                return
            yield block


def _pyav_blocks(readable: Path | BinaryIO, name: str) -> _Opened:
    try:
        container = av.open(str(readable) if isinstance(readable, Path) else readable, mode="r")
    except (av.error.FFmpegError, ValueError, OSError) as error:
        raise AudioDecodeError(f"not a readable audio or video file ({_reason(error)})", source=name) from None
    if not container.streams.audio:
        container.close()
        # FFmpeg opens some non-media files (e.g. plain text, as ANSI art) as video.
        raise AudioDecodeError("the file has no audio track (is it an audio or video file?)", source=name)
    stream = container.streams.audio[0]
    codec = stream.codec_context
    if codec is None:
        container.close()
        raise AudioDecodeError("the audio track's codec is unknown or unsupported", source=name)
    rate = codec.sample_rate or stream.rate or 0
    channels = codec.channels or 1
    if rate <= 0:
        container.close()
        raise AudioDecodeError("the audio track declares no sample rate", source=name)

    def blocks() -> Iterator[np.ndarray]:
        with container:
            yield from _decode_stream(container, stream, name)

    return _Opened(blocks(), rate, channels, _declared_duration(container, stream), truncation_slack_s=0.1)


def _decode_stream(container: av.container.InputContainer, stream: av.AudioStream, name: str) -> Iterator[np.ndarray]:
    """Yield (frames, channels) float32 blocks as FFmpeg decodes them."""
    # Interleaved float: one plane whatever the channel count (PyAV's planar to_ndarray crashed the
    # process on 8-channel audio).
    to_float = av.AudioResampler(format="flt")
    try:
        for packet in container.demux(stream):
            for frame in packet.decode():
                for converted in to_float.resample(frame):
                    yield converted.to_ndarray().reshape(-1, len(converted.layout.channels))
    except av.error.FFmpegError as error:
        raise AudioDecodeError(f"the audio is corrupt ({_reason(error)})", source=name) from None
    except ValueError as error:  # PyAV's resampler: a frame whose format or layout changed mid-stream
        raise AudioDecodeError(f"the audio changes its format mid-stream ({_reason(error)})", source=name) from None


def _declared_duration(container: av.container.InputContainer, stream: av.AudioStream) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return None


def _check_header(opened: _Opened, limits: AudioLimits, name: str) -> None:
    """Refuse, before decoding, what the header already shows to be over a limit."""
    if limits.max_channels is not None and opened.channels > limits.max_channels:
        raise AudioTooLargeError(
            f"the audio has {opened.channels} channels; the limit is {limits.max_channels} (SOUNDSIFT_MAX_CHANNELS)",
            source=name,
        )
    if opened.declared_s is None:
        return
    _check_duration(opened.declared_s, limits.max_duration_s, name)
    _check_decoded_size(opened.declared_s * opened.rate * opened.channels, limits.max_decoded_mb, name)


def _check_decoded_size(samples: float, max_decoded_mb: float | None, name: str) -> None:
    megabytes = samples * _FLOAT32_BYTES / 1e6
    if max_decoded_mb is not None and megabytes > max_decoded_mb:
        raise AudioTooLargeError(
            f"decoding it would produce {megabytes:,.0f} MB of audio (channels x sample rate x duration); the "
            f"limit is {max_decoded_mb:g} MB (SOUNDSIFT_MAX_DECODED_MB)",
            source=name,
        )


def _resampled_blocks(opened: _Opened, sample_rate: int, name: str, limits: AudioLimits) -> Iterator[np.ndarray]:
    resampler = (
        soxr.ResampleStream(opened.rate, sample_rate, 1, dtype="float32", quality="HQ")
        if opened.rate != sample_rate
        else None
    )
    produced = 0
    for block in opened.blocks:
        if block.ndim == 2 and block.shape[1] != opened.channels:
            opened.channels = block.shape[1]
            _check_header(opened, limits, name)
        opened.decoded_frames += len(block)
        _check_duration(opened.decoded_frames / opened.rate, limits.max_duration_s, name)
        _check_decoded_size(opened.decoded_frames * opened.channels, limits.max_decoded_mb, name)
        out = _finite(_to_mono_float32(block), name)
        out = _finite(resampler.resample_chunk(out), name) if resampler else out
        produced += len(out)
        if len(out):
            yield out
    if opened.decoded_frames == 0:
        raise EmptyAudioError("the audio has no samples", source=name)
    if resampler:
        tail = _finite(resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True), name)
        produced += len(tail)
        if len(tail):
            yield tail
    if produced == 0:
        raise AudioTooShortError(
            f"{opened.decoded_frames} sample(s) at {opened.rate} Hz leave nothing at {sample_rate} Hz", source=name
        )


def _finite(samples: np.ndarray, name: str) -> np.ndarray:
    # Checked again after resampling: finite samples near float32's limit can overflow there.
    if not np.all(np.isfinite(samples)):
        raise NonFiniteAudioError("the audio contains NaN or infinite samples (or samples too large)", source=name)
    return samples


def _checked_for_truncation(blocks: Iterator[np.ndarray], opened: _Opened, name: str) -> Iterator[np.ndarray]:
    """Pass the blocks through; at the end, compare what decoded with what the header declared."""
    yield from blocks
    if not opened.declared_s:
        return
    held_s = opened.decoded_frames / opened.rate
    if held_s < opened.declared_s * _TRUNCATION_TOLERANCE - opened.truncation_slack_s:
        raise AudioDecodeError(
            f"the file is truncated: it declares {opened.declared_s:.2f} s but holds {held_s:.2f} s", source=name
        )


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


def _to_mono_float32(samples: np.ndarray) -> np.ndarray:
    if np.issubdtype(samples.dtype, np.integer):
        info = np.iinfo(samples.dtype)
        half_range = (float(info.max) - float(info.min) + 1.0) / 2.0
        offset = float(info.min) + half_range
        samples = ((samples.astype(np.float64) - offset) / half_range).astype(np.float32)
    if samples.ndim == 2:
        # Summed in float64: channels near float32's limit would overflow a float32 sum.
        samples = samples.mean(axis=1, dtype=np.float64)
    return np.ascontiguousarray(samples, dtype=np.float32)


def _check_duration(duration_s: float, max_duration_s: float | None, name: str) -> None:
    if max_duration_s is not None and duration_s > max_duration_s:
        raise AudioTooLongError(
            f"the audio lasts {duration_s:.1f} s, more than the limit of {max_duration_s:g} s "
            "(raise it with max_duration_s / --max-duration / SOUNDSIFT_MAX_DURATION_S)",
            source=name,
        )


def _reason(error: Exception) -> str:
    return getattr(error, "strerror", None) or str(error) or type(error).__name__
