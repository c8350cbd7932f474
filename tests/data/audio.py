"""Real audio files made on the fly: numpy signals encoded by libsndfile or PyAV (FFmpeg)."""

from __future__ import annotations

import io
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import soundfile


def tone(seconds: float, rate: int, *, frequency: float = 440.0, channels: int = 1, level: float = 0.3) -> np.ndarray:
    """(frames, channels) float32 sine, each channel at a different pitch."""
    t = np.arange(int(seconds * rate)) / rate
    columns = [level * np.sin(2 * np.pi * frequency * (1 + 0.5 * c) * t) for c in range(channels)]
    return np.stack(columns, axis=1).astype(np.float32)


def write_soundfile(path: Path, samples: np.ndarray, rate: int, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, samples, rate, **kwargs)
    return path


def write_pyav(
    path: Path, samples: np.ndarray, rate: int, codec: str, *, container_format: str | None = None, video: bool = False
) -> Path:
    """Encode (frames, channels) float32 with an FFmpeg codec; optionally with a video track."""
    channels = samples.shape[1]
    layout = "mono" if channels == 1 else "stereo"
    with av.open(str(path), mode="w", format=container_format) as container:
        if video:
            picture_stream = container.add_stream("mpeg4", rate=10)
            picture_stream.width, picture_stream.height, picture_stream.pix_fmt = 64, 48, "yuv420p"
        stream = container.add_stream(codec, rate=rate)
        stream.layout = layout
        sample_format = stream.codec_context.codec.audio_formats[0].name
        block = 1024
        for index, start in enumerate(range(0, len(samples), block)):
            chunk = samples[start : start + block]
            frame = av.AudioFrame.from_ndarray(_pack(chunk, sample_format), format=sample_format, layout=layout)
            frame.sample_rate = rate
            frame.pts = start
            frame.time_base = Fraction(1, rate)
            for packet in stream.encode(frame):
                container.mux(packet)
            if video and index % 10 == 0:
                image = av.VideoFrame.from_ndarray(np.zeros((48, 64, 3), dtype=np.uint8), format="rgb24")
                for packet in picture_stream.encode(image):
                    container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
        if video:
            for packet in picture_stream.encode(None):
                container.mux(packet)
    return path


def write_video_only(path: Path) -> Path:
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for _ in range(10):
            image = av.VideoFrame.from_ndarray(np.zeros((48, 64, 3), dtype=np.uint8), format="rgb24")
            for packet in stream.encode(image):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def _pack(chunk: np.ndarray, sample_format: str) -> np.ndarray:
    planar = sample_format.endswith("p")
    base = sample_format.rstrip("p")
    data = chunk.T if planar else chunk.reshape(1, -1)
    if base == "s16":
        return np.ascontiguousarray((np.clip(data, -1, 1) * 32767).astype(np.int16))
    if base == "s32":
        return np.ascontiguousarray((np.clip(data, -1, 1) * 2147483647).astype(np.int32))
    return np.ascontiguousarray(data.astype(np.float32))


def wav_bytes(seconds: float, rate: int = 16_000, frequency: float = 440.0, channels: int = 1) -> bytes:
    """A tone as WAV file bytes."""
    buffer = io.BytesIO()
    soundfile.write(buffer, tone(seconds, rate, frequency=frequency, channels=channels), rate, format="WAV")
    return buffer.getvalue()


def silent_flac(seconds: int, rate: int, channels: int) -> bytes:
    """FLAC of digital silence: it compresses to almost nothing (600 s x 8 ch x 96 kHz is ~0.5 MB)."""
    buffer = io.BytesIO()
    with soundfile.SoundFile(buffer, "w", rate, channels, format="FLAC") as handle:
        second = np.zeros((rate, channels), dtype=np.float32)
        for _ in range(seconds):
            handle.write(second)
    return buffer.getvalue()


def with_flac_total_samples(data: bytes, total: int) -> bytes:
    """The same FLAC with its STREAMINFO total-sample count rewritten (a header that lies)."""
    patched = bytearray(data)
    if patched[:4] != b"fLaC":
        raise ValueError("not a FLAC file")
    word = int.from_bytes(patched[18:26], "big")
    patched[18:26] = ((word & ~((1 << 36) - 1)) | total).to_bytes(8, "big")
    return bytes(patched)
