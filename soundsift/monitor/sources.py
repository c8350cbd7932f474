"""Where live audio comes from: the microphone, stdin, a file replayed in real time, or any stream or
device PyAV opens. Each yields (mono float32 block, sample rate)."""

from __future__ import annotations

import logging
import queue
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from soundsift.core.audio import stream_audio
from soundsift.errors import ConfigurationError
from soundsift.optional import SOUNDDEVICE

logger = logging.getLogger("soundsift.monitor")


Opener = Callable[[], Iterator[tuple[np.ndarray, int]]]
"""Opens a source; the iterator yields (mono float32 block, sample rate) until the source ends."""


def open_source(
    source: str, *, rate: int = 16_000, speed: float = 1.0, on_bad_chunk: Callable[[], None] = lambda: None
) -> Opener:
    """An opener for ``source``: "mic", "-" (16-bit PCM at ``rate`` on stdin), a file (replayed at
    ``speed`` times real time) or anything PyAV opens (rtsp://, http://, alsa:hw:0, pulse:default)."""
    if source == "mic":
        return lambda: _microphone(rate)
    if source == "-":
        return lambda: _stdin_pcm(rate)
    if Path(source).is_file():
        return lambda: _replayed_file(Path(source), speed)
    return lambda: _pyav_live(source, on_bad_chunk)


# Sources PyAV opens as capture devices ("alsa:hw:0"), not files.
DEVICE_PREFIXES = ("alsa", "pulse", "avfoundation", "dshow")


def names_a_local_file(source: str) -> bool:
    """True for a source that can only mean a file on this machine: not the microphone, not stdin,
    not a URL (``scheme://``) and not a capture device."""
    return source not in ("mic", "-") and "://" not in source and source.split(":")[0] not in DEVICE_PREFIXES


def is_finite(source: str) -> bool:
    """Files and stdin end; live sources are reopened when they drop."""
    return source == "-" or Path(source).is_file()


def _microphone(rate: int) -> Iterator[tuple[np.ndarray, int]]:
    try:
        sounddevice = SOUNDDEVICE.require("the microphone source")
    except OSError as error:  # the package is there but PortAudio is not
        raise ConfigurationError(f"the microphone source needs PortAudio ({error})") from None
    blocks: queue.Queue[np.ndarray] = queue.Queue()
    with sounddevice.InputStream(
        samplerate=rate,
        channels=1,
        dtype="float32",
        blocksize=rate // 10,
        callback=lambda data, *_: blocks.put(data[:, 0].copy()),
    ):
        while True:
            yield blocks.get(), rate


def _stdin_pcm(rate: int) -> Iterator[tuple[np.ndarray, int]]:
    chunk = rate // 10 * 2
    while data := sys.stdin.buffer.read(chunk):
        usable = len(data) - len(data) % 2
        yield np.frombuffer(data[:usable], dtype="<i2").astype(np.float32) / 32768.0, rate


def _replayed_file(path: Path, speed: float) -> Iterator[tuple[np.ndarray, int]]:
    stream = stream_audio(path, 48_000, block_s=0.1)
    started, played = time.monotonic(), 0.0
    for block in stream.blocks:
        played += len(block) / 48_000
        delay = started + played / speed - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        yield block, 48_000


def _pyav_live(url: str, on_bad_chunk: Callable[[], None]) -> Iterator[tuple[np.ndarray, int]]:
    import av

    device_format, _, device = url.partition(":") if url.split(":")[0] in DEVICE_PREFIXES else (None, "", url)
    with av.open(device or url, format=device_format, timeout=10) as container:
        stream = container.streams.audio[0]
        to_float = av.AudioResampler(format="fltp", layout="mono")
        for packet in container.demux(stream):
            try:
                frames = packet.decode()
            except av.error.FFmpegError as error:
                logger.warning("bad chunk skipped: %s", error)
                on_bad_chunk()
                continue
            for frame in frames:
                for converted in to_float.resample(frame):
                    yield converted.to_ndarray()[0].astype(np.float32), converted.sample_rate
