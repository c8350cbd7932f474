"""Shared fuzzing helpers: a seed corpus made from real ESC-50 clips, byte- and header-level
mutations, and an isolated decoder worker that checks the decoder's properties for one input.

The worker is a separate Python process (``python -m tests.security.fuzzing worker``) that
decodes inputs sent over a pipe, so a hang is a timeout, a segfault is a reported crash and a
decompression bomb hits an address-space limit instead of the test runner. Per input it reports:

* the outcome of ``load_audio(data, 48000, limits=<the server's default limits>)``, twice, with the heap scribbled
  on in between (two decodes must agree to the bit: catches uninitialised memory);
* the outcome of fully draining ``stream_audio`` on the same bytes, twice;
* peak resident memory growth of the first decode (VmHWM, reset with /proc/self/clear_refs) and
  the tracemalloc peak (Python and numpy allocations), to compare with the output's size.

`problems()` turns a report into the list of broken properties (empty: the input passed).
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import random
import resource
import select
import signal
import struct
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tests.data.shared import ESC50

REPO = Path(__file__).resolve().parents[2]
ESC50_AUDIO = ESC50 / "audio"

MODEL_RATE = 48_000
MAX_DURATION_S = 600.0
# No single input may make the decoder allocate more than this beyond its own output.
MEMORY_BUDGET_BYTES = 256 * 1024 * 1024
# The worker's address space: its baseline plus this much. A bomb fails with MemoryError here
# instead of taking the machine's memory (the budget above is what the test asserts).
WORKER_HEADROOM_BYTES = 2 * 1024 * 1024 * 1024
CASE_TIMEOUT_S = float(os.environ.get("SOUNDSIFT_FUZZ_CASE_TIMEOUT_S", "30"))

# Values that header fields are rewritten to: zeros, ones, sign and width boundaries, huge rates.
INTERESTING_U32 = (
    0, 1, 2, 3, 7, 8, 16, 255, 256, 0x7FFF, 0xFFFF, 0x10000, 384_000, 0xFFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFE,
    0xFFFFFFFF,
)  # fmt: skip


def example_count(default: int) -> int:
    """Hypothesis examples per fuzz test: SOUNDSIFT_FUZZ_EXAMPLES, else the fast-tier default."""
    return int(os.environ.get("SOUNDSIFT_FUZZ_EXAMPLES", default))


# --------------------------------------------------------------------------- seed corpus


def esc50_clip_paths(count: int = 3) -> list[Path]:
    """Clips spread over the fold (a deterministic pick)."""
    clips = sorted(ESC50_AUDIO.glob("*.wav"))
    if not clips:
        raise FileNotFoundError(f"no ESC-50 clips under {ESC50_AUDIO}")
    step = max(1, len(clips) // count)
    return clips[::step][:count]


def loudest_window(path: Path, seconds: float) -> tuple[np.ndarray, int]:
    """The loudest `seconds` of a clip as (frames,) float32, so seeds are never near-silent."""
    import soundfile

    samples, rate = soundfile.read(path, dtype="float32", always_2d=False)
    if samples.ndim == 2:
        samples = samples.mean(axis=1)
    width = max(1, int(seconds * rate))
    if len(samples) <= width:
        return samples, rate
    energy = np.convolve(samples.astype(np.float64) ** 2, np.ones(rate // 10), mode="same")
    start = int(np.clip(np.argmax(energy) - width // 2, 0, len(samples) - width))
    return samples[start : start + width].copy(), rate


SOUNDFILE_FORMATS = {
    "pcm16.wav": {"format": "WAV", "subtype": "PCM_16"},
    "float.wav": {"format": "WAV", "subtype": "FLOAT"},
    "ulaw.wav": {"format": "WAV", "subtype": "ULAW"},
    "flac": {"format": "FLAC", "subtype": "PCM_16"},
    "vorbis.ogg": {"format": "OGG", "subtype": "VORBIS"},
    "opus.ogg": {"format": "OGG", "subtype": "OPUS"},
    "mp3": {"format": "MP3", "subtype": "MPEG_LAYER_III"},
    "aiff": {"format": "AIFF", "subtype": "PCM_16"},
    "w64": {"format": "W64", "subtype": "PCM_16"},
    "caf": {"format": "CAF", "subtype": "ALAC_16"},
}
PYAV_FORMATS = {"aac.m4a": ("aac", "mp4"), "opus.webm": ("libopus", "webm"), "mp3-lame.mp3": ("libmp3lame", "mp3")}


def encode(samples: np.ndarray, rate: int, kind: str) -> bytes:
    """One mono clip as the bytes of a file of `kind` (a key of SOUNDFILE_FORMATS or PYAV_FORMATS)."""
    import soundfile

    if kind in SOUNDFILE_FORMATS:
        options = SOUNDFILE_FORMATS[kind]
        if options["subtype"] == "OPUS" and rate not in (8000, 12000, 16000, 24000, 48000):
            raise ValueError("opus needs 8/12/16/24/48 kHz")
        buffer = io.BytesIO()
        soundfile.write(buffer, samples, rate, **options)
        return buffer.getvalue()
    from tests.data.audio import write_pyav

    codec, container = PYAV_FORMATS[kind]
    if codec == "libopus":
        samples, rate = _resample(samples, rate, 48_000), 48_000
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"seed.{container}"
        write_pyav(path, samples.reshape(-1, 1), rate, codec, container_format=container)
        return path.read_bytes()


def _resample(samples: np.ndarray, rate: int, to_rate: int) -> np.ndarray:
    import soxr

    return soxr.resample(samples, rate, to_rate).astype(np.float32)


@functools.lru_cache(maxsize=4)
def seed_corpus(clips: int = 2, seconds: float = 0.5) -> dict[str, bytes]:
    """Real ESC-50 audio in every format the decoder reads, keyed ``<clip>:<format>``."""
    corpus: dict[str, bytes] = {}
    for path in esc50_clip_paths(clips):
        samples, rate = loudest_window(path, seconds)
        corpus[f"{path.stem}:orig.wav"] = _crop_wav(path, samples, rate)
        for kind in [*SOUNDFILE_FORMATS, *PYAV_FORMATS]:
            corpus[f"{path.stem}:{kind}"] = encode(samples, rate, kind)
    return corpus


def _crop_wav(path: Path, samples: np.ndarray, rate: int) -> bytes:
    """The clip as 16-bit WAV as ESC-50 ships it (the header layout of the real file)."""
    import soundfile

    buffer = io.BytesIO()
    soundfile.write(buffer, samples, rate, format="WAV", subtype=soundfile.info(path).subtype)
    return buffer.getvalue()


# --------------------------------------------------------------------------- mutations


def bit_flip(data: bytes, position: int, bit: int) -> bytes:
    if not data:
        return data
    buffer = bytearray(data)
    buffer[position % len(buffer)] ^= 1 << (bit % 8)
    return bytes(buffer)


def overwrite(data: bytes, position: int, chunk: bytes) -> bytes:
    if not data:
        return chunk
    position %= len(data)
    return data[:position] + chunk + data[position + len(chunk) :]


def truncate(data: bytes, length: int) -> bytes:
    return data[: length % (len(data) + 1)]


def duplicate_range(data: bytes, start: int, length: int, at: int) -> bytes:
    if not data:
        return data
    start %= len(data)
    piece = data[start : start + length]
    at %= len(data) + 1
    return data[:at] + piece + data[at:]


def remove_range(data: bytes, start: int, length: int) -> bytes:
    if not data:
        return data
    start %= len(data)
    return data[:start] + data[start + length :]


def insert_bytes(data: bytes, at: int, chunk: bytes) -> bytes:
    at %= len(data) + 1
    return data[:at] + chunk + data[at:]


@dataclass(frozen=True)
class Field:
    """A header field: where it is, how wide, and its byte order."""

    name: str
    offset: int
    size: int  # bytes: 1, 2, 4 or 8
    order: str = "<"


def header_fields(data: bytes) -> list[Field]:
    """Fields worth rewriting in the headers of WAV/W64/AIFF/FLAC/Ogg/MP3/MP4 data."""
    fields: list[Field] = []
    fields += _wav_fields(data)
    fields += _aiff_fields(data)
    fields += _flac_fields(data)
    fields += _ogg_fields(data)
    fields += _mp3_fields(data)
    fields += _mp4_fields(data)
    return fields


def _wav_fields(data: bytes) -> list[Field]:
    if data[:4] not in (b"RIFF", b"RF64") or data[8:12] != b"WAVE":
        return []
    fields = [Field("riff.size", 4, 4)]
    offset = 12
    while offset + 8 <= len(data) and len(fields) < 40:
        chunk_id, size = data[offset : offset + 4], struct.unpack_from("<I", data, offset + 4)[0]
        fields.append(Field(f"{chunk_id!r}.size", offset + 4, 4))
        if chunk_id == b"fmt ":
            base = offset + 8
            fields += [
                Field("fmt.format", base, 2),
                Field("fmt.channels", base + 2, 2),
                Field("fmt.sample_rate", base + 4, 4),
                Field("fmt.byte_rate", base + 8, 4),
                Field("fmt.block_align", base + 12, 2),
                Field("fmt.bits", base + 14, 2),
            ]
            if size >= 18:
                fields.append(Field("fmt.extra_size", base + 16, 2))
        elif chunk_id == b"fact":
            fields.append(Field("fact.frames", offset + 8, 4))
        offset += 8 + size + (size % 2)
    return [f for f in fields if f.offset + f.size <= len(data)]


def _aiff_fields(data: bytes) -> list[Field]:
    if data[:4] != b"FORM" or data[8:12] not in (b"AIFF", b"AIFC"):
        return []
    fields = [Field("form.size", 4, 4, ">")]
    position = data.find(b"COMM")
    if position >= 0:
        fields += [
            Field("comm.size", position + 4, 4, ">"),
            Field("comm.channels", position + 8, 2, ">"),
            Field("comm.frames", position + 10, 4, ">"),
            Field("comm.bits", position + 14, 2, ">"),
            Field("comm.rate_exponent", position + 16, 2, ">"),
        ]
    position = data.find(b"SSND")
    if position >= 0:
        fields += [Field("ssnd.size", position + 4, 4, ">"), Field("ssnd.offset", position + 8, 4, ">")]
    return [f for f in fields if f.offset + f.size <= len(data)]


def _flac_fields(data: bytes) -> list[Field]:
    if data[:4] != b"fLaC" or len(data) < 42:
        return []
    # STREAMINFO: block sizes (2+2), frame sizes (3+3), then rate:20 channels-1:3 bps-1:5 total:36.
    return [
        Field("streaminfo.min_block", 8, 2, ">"),
        Field("streaminfo.max_block", 10, 2, ">"),
        Field("streaminfo.rate_channels_bps", 18, 4, ">"),
        Field("streaminfo.rate_channels_bps_total", 18, 8, ">"),
        Field("streaminfo.total_samples_low", 22, 4, ">"),
    ]


def _ogg_fields(data: bytes) -> list[Field]:
    fields: list[Field] = []
    position = data.find(b"\x01vorbis")
    if position >= 0:
        fields += [
            Field("vorbis.channels", position + 11, 1),
            Field("vorbis.rate", position + 12, 4),
            Field("vorbis.blocksizes", position + 28, 1),
        ]
    position = data.find(b"OpusHead")
    if position >= 0:
        fields += [
            Field("opus.channels", position + 9, 1),
            Field("opus.pre_skip", position + 10, 2),
            Field("opus.rate", position + 12, 4),
            Field("opus.gain", position + 16, 2),
            Field("opus.mapping", position + 18, 1),
        ]
    position = data.find(b"OggS")
    if position >= 0:
        fields += [Field("ogg.granule", position + 6, 8), Field("ogg.segments", position + 26, 1)]
    return [f for f in fields if f.offset + f.size <= len(data)]


def _mp3_fields(data: bytes) -> list[Field]:
    fields: list[Field] = []
    if data[:3] == b"ID3":
        fields.append(Field("id3.size", 6, 4, ">"))
    for tag in (b"Xing", b"Info"):
        position = data.find(tag)
        if position >= 0:
            fields += [Field("xing.flags", position + 4, 4, ">"), Field("xing.frames", position + 8, 4, ">")]
            fields.append(Field("xing.bytes", position + 12, 4, ">"))
    position = data.find(b"\xff\xfb")
    if position < 0:
        position = data.find(b"\xff\xf3")
    if position >= 0:
        fields.append(Field("mpeg.frame_header", position, 4, ">"))
    return [f for f in fields if f.offset + f.size <= len(data)]


def _mp4_fields(data: bytes) -> list[Field]:
    if data[4:8] not in (b"ftyp", b"moov", b"mdat") and data[:4] != b"\x1a\x45\xdf\xa3":
        return []
    fields: list[Field] = []
    for box, offsets in {
        b"mvhd": (12, 16),
        b"mdhd": (12, 16),
        b"stsz": (8, 12),
        b"stts": (4, 8, 12),
        b"stsc": (4,),
        b"stco": (4,),
        b"mp4a": (20, 22, 28),
        b"esds": (4,),
    }.items():
        position = data.find(box)
        if position >= 4:
            fields.append(Field(f"{box.decode()}.size", position - 4, 4, ">"))
            fields += [Field(f"{box.decode()}+{o}", position + 4 + o, 4, ">") for o in offsets]
    return [f for f in fields if f.offset + f.size <= len(data)]


def rewrite_field(data: bytes, header_field: Field, value: int) -> bytes:
    bits = header_field.size * 8
    value &= (1 << bits) - 1
    code = {1: "B", 2: "H", 4: "I", 8: "Q"}[header_field.size]
    buffer = bytearray(data)
    struct.pack_into(header_field.order + code, buffer, header_field.offset, value)
    return bytes(buffer)


def _ogg_crc_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else (crc << 1)
        table.append(crc & 0xFFFFFFFF)
    return table


_OGG_CRC = _ogg_crc_table()


def fix_ogg_checksums(data: bytes) -> bytes:
    """Recompute every Ogg page CRC, so a mutation inside a page reaches the codec instead of
    being dropped by libogg's checksum test."""
    buffer = bytearray(data)
    position = buffer.find(b"OggS")
    while position >= 0 and position + 27 <= len(buffer):
        segments = buffer[position + 26]
        table_end = position + 27 + segments
        if table_end > len(buffer):
            break
        end = min(len(buffer), table_end + sum(buffer[position + 27 : table_end]))
        buffer[position + 22 : position + 26] = b"\0\0\0\0"
        crc = 0
        for byte in bytes(buffer[position:end]):
            crc = ((crc << 8) & 0xFFFFFFFF) ^ _OGG_CRC[((crc >> 24) & 0xFF) ^ byte]
        struct.pack_into("<I", buffer, position + 22, crc)
        position = buffer.find(b"OggS", end)
    return bytes(buffer)


MUTATORS: dict[str, Callable[..., bytes]] = {
    "bit_flip": bit_flip,
    "overwrite": overwrite,
    "truncate": truncate,
    "duplicate_range": duplicate_range,
    "remove_range": remove_range,
    "insert_bytes": insert_bytes,
}


def random_mutation(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    """One mutation chosen by `rng` (used by scripts/fuzz.py; the tests draw with hypothesis)."""
    choice = rng.randrange(8)
    size = max(1, len(data))
    if choice == 0:
        return bit_flip(data, rng.randrange(size), rng.randrange(8)), "bit_flip"
    if choice == 1:
        chunk = rng.choice([b"\x00", b"\xff", b"\xff" * 4, b"\x7f\xff\xff\xff", rng.randbytes(rng.randint(1, 16))])
        return overwrite(data, rng.randrange(size), chunk), "overwrite"
    if choice == 2:
        return truncate(data, rng.randrange(size + 1)), "truncate"
    if choice == 3:
        return duplicate_range(data, rng.randrange(size), rng.randint(1, 4096), rng.randrange(size + 1)), "duplicate"
    if choice == 4:
        return remove_range(data, rng.randrange(size), rng.randint(1, 4096)), "remove"
    if choice == 5:
        return insert_bytes(data, rng.randrange(size + 1), rng.randbytes(rng.randint(1, 64))), "insert"
    fields = header_fields(data)
    if not fields:
        return bit_flip(data, rng.randrange(size), rng.randrange(8)), "bit_flip"
    header_field = rng.choice(fields)
    value = rng.choice([*INTERESTING_U32, rng.getrandbits(header_field.size * 8)])
    return rewrite_field(data, header_field, value), f"rewrite {header_field.name}={value:#x}"


def mutate(data: bytes, rng: random.Random, rounds: int) -> tuple[bytes, list[str]]:
    applied = []
    for _ in range(rounds):
        data, name = random_mutation(data, rng)
        applied.append(name)
    if b"OggS" in data[:64] and rng.random() < 0.7:
        data = fix_ogg_checksums(data)
        applied.append("fix_ogg_checksums")
    return data, applied


# --------------------------------------------------------------------------- special inputs


def silent_flac_bomb(seconds: float = 600.0, rate: int = 96_000, channels: int = 8) -> bytes:
    """A FLAC of digital silence: about 0.5 MB that decodes to several GB of float32."""
    import soundfile

    buffer = io.BytesIO()
    with soundfile.SoundFile(buffer, "w", samplerate=rate, channels=channels, format="FLAC", subtype="PCM_16") as f:
        block = np.zeros((rate * 10, channels), dtype=np.int16)
        for _ in range(int(seconds // 10)):
            f.write(block)
    return buffer.getvalue()


def wav_bytes(samples: np.ndarray, rate: int, subtype: str = "PCM_16") -> bytes:
    import soundfile

    buffer = io.BytesIO()
    soundfile.write(buffer, samples, rate, format="WAV", subtype=subtype)
    return buffer.getvalue()


def raw_wav(frames: bytes, *, channels: int, rate: int, bits: int = 16, data_size: int | None = None) -> bytes:
    """A hand-written PCM WAV header (any field values) followed by `frames`."""
    block_align = channels * bits // 8
    size = len(frames) if data_size is None else data_size
    fmt = struct.pack("<HHIIHH", 1, channels, rate, (rate * block_align) & 0xFFFFFFFF, block_align & 0xFFFF, bits)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", size) + frames
    return b"RIFF" + struct.pack("<I", len(body) & 0xFFFFFFFF) + body


# --------------------------------------------------------------------------- the worker


@dataclass
class Report:
    """What the worker saw for one input (see the module docstring)."""

    status: str  # "done", "timeout", "crashed"
    elapsed_s: float = 0.0
    load: list[dict] = field(default_factory=list)
    stream: list[dict] = field(default_factory=list)
    rss_growth: int = 0
    traced_peak: int = 0
    detail: str = ""

    @property
    def accepted(self) -> bool:
        return bool(self.load) and self.load[0].get("kind") == "ok"


def problems(report: Report, *, budget: int = MEMORY_BUDGET_BYTES) -> list[str]:
    """Every property the input broke; empty when it passed."""
    if report.status == "timeout":
        return [f"hang: no answer within {CASE_TIMEOUT_S:g} s"]
    if report.status == "crashed":
        return [f"the decoder process died: {report.detail}"]
    found: list[str] = []
    for name, outcomes in (("load_audio", report.load), ("stream_audio", report.stream)):
        for outcome in outcomes:
            found += [f"{name}: {p}" for p in _outcome_problems(outcome)]
        if len(outcomes) == 2 and _fingerprint(outcomes[0]) != _fingerprint(outcomes[1]):
            first, second = (_fingerprint(outcome) for outcome in outcomes)
            found.append(f"{name}: two decodes of the same bytes differ: {first} vs {second}")
    output = report.load[0].get("nbytes", 0) if report.load else 0
    for label, used in (("resident memory", report.rss_growth), ("tracemalloc peak", report.traced_peak)):
        if used - output > budget:
            found.append(
                f"{label} grew by {used / 2**20:.0f} MiB for {output / 2**20:.1f} MiB of output "
                f"(budget {budget / 2**20:.0f} MiB beyond the output)"
            )
    return sorted(set(found), key=found.index)


def _outcome_problems(outcome: dict) -> list[str]:
    if outcome["kind"] == "error":
        if outcome.get("memory_error"):
            return [f"MemoryError: the decoder tried to allocate past the worker's limit ({outcome['message'][:200]})"]
        if not outcome["soundsift_error"]:
            return [f"unexpected {outcome['type']}: {outcome['message'][:300]}"]
        return []
    found = []
    if outcome["dtype"] != "float32":
        found.append(f"samples are {outcome['dtype']}, not float32")
    if outcome["ndim"] != 1:
        found.append(f"samples have {outcome['ndim']} dimensions, not 1 (mono)")
    if outcome["size"] == 0:
        found.append("returned 0 samples instead of raising EmptyAudioError")
    if not outcome["finite"]:
        found.append("samples contain NaN or infinity")
    if outcome.get("sample_rate", MODEL_RATE) != MODEL_RATE:
        found.append(f"sample rate {outcome['sample_rate']}, not {MODEL_RATE}")
    if outcome.get("duration_s", 0.0) > MAX_DURATION_S + 1.0:
        found.append(f"returned {outcome['duration_s']:.1f} s, past max_duration_s={MAX_DURATION_S:g}")
    return found


def _fingerprint(outcome: dict) -> str:
    if outcome["kind"] == "error":
        return f"raised {outcome['type']}"
    return f"{outcome['size']} samples sha256={outcome['digest'][:16]}"


class DecoderWorker:
    """A long-lived decoder process; restarted after a hang or a crash."""

    def __init__(self, timeout_s: float = CASE_TIMEOUT_S) -> None:
        self.timeout_s = timeout_s
        self.process: subprocess.Popen | None = None
        self.cases = 0

    def __enter__(self) -> DecoderWorker:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _start(self) -> subprocess.Popen:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.security.fuzzing", "worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            cwd=REPO,
            env=env,
        )
        said = self._expect_line(120.0)  # "ready" once the imports are done (a hang guard)
        if said != b"ready\n":
            self.close()
            raise RuntimeError(f"the decoder worker did not start: it said {said!r}")
        return self.process

    def _expect_line(self, timeout_s: float) -> bytes | None:
        assert self.process is not None and self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], timeout_s)
        if not ready:
            return None
        return self.process.stdout.readline()

    def run(self, data: bytes, *, stream: bool = True, repeat: bool = True) -> Report:
        process = self.process if self.process and self.process.poll() is None else self._start()
        assert process.stdin is not None
        started = time.monotonic()
        flags = (1 if stream else 0) | (2 if repeat else 0)
        self.cases += 1
        try:
            process.stdin.write(struct.pack("<IB", len(data), flags) + data)
            process.stdin.flush()
        except BrokenPipeError:
            return self._died(started)
        line = self._expect_line(self.timeout_s)
        if line is None:
            self.close()
            return Report("timeout", elapsed_s=time.monotonic() - started)
        if not line:
            return self._died(started)
        answer = json.loads(line)
        return Report("done", elapsed_s=time.monotonic() - started, **answer)

    def _died(self, started: float) -> Report:
        assert self.process is not None
        code = self.process.wait(timeout=10)
        detail = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"
        self.process = None
        return Report("crashed", elapsed_s=time.monotonic() - started, detail=detail)

    def close(self) -> None:
        if self.process is not None:
            if self.process.poll() is None:
                self.process.kill()
            self.process.wait(timeout=10)
            for pipe in (self.process.stdin, self.process.stdout):
                if pipe is not None:
                    pipe.close()
            self.process = None


def _status_kib(key: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(key):
                return int(line.split()[1])
    return 0


def _reset_peak_rss() -> None:
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")


def _outcome(call: Callable[[], np.ndarray | object]) -> dict:
    from soundsift.errors import SoundsiftError

    try:
        result = call()
    except MemoryError as error:
        return {"kind": "error", "type": "MemoryError", "soundsift_error": False, "memory_error": True,
                "message": str(error)}  # fmt: skip
    except Exception as error:  # the point is to see every kind
        kind = type(error)
        return {
            "kind": "error",
            "type": f"{kind.__module__}.{kind.__qualname__}",
            "soundsift_error": isinstance(error, SoundsiftError),
            "message": str(error),
        }
    samples, rate = result if isinstance(result, tuple) else (result.samples, result.sample_rate)
    samples = np.asarray(samples)
    return {
        "kind": "ok",
        "dtype": str(samples.dtype),
        "ndim": samples.ndim,
        "size": int(samples.size),
        "nbytes": int(samples.nbytes),
        "finite": bool(np.all(np.isfinite(samples))),
        "sample_rate": rate,
        "duration_s": samples.shape[0] / rate if samples.ndim else 0.0,
        "digest": hashlib.sha256(np.ascontiguousarray(samples).tobytes()).hexdigest(),
    }


def limits():
    """The limits a server applies by default (soundsift.core.settings.ModelSettings)."""
    from soundsift.core.audio import AudioLimits
    from soundsift.core.settings import ModelSettings

    defaults = ModelSettings(model="unused")
    return AudioLimits(
        max_duration_s=MAX_DURATION_S,
        min_duration_s=defaults.min_duration_s,
        max_decoded_mb=defaults.max_decoded_mb,
        max_channels=defaults.max_channels,
    )


def _drain_stream(data: bytes) -> tuple[np.ndarray, int]:
    from soundsift.core.audio import stream_audio

    opened = stream_audio(data, MODEL_RATE, limits=limits())
    blocks = list(opened.blocks)
    samples = np.concatenate(blocks) if blocks else np.zeros(0, dtype=np.float32)
    return samples, opened.sample_rate


def _scribble_heap() -> None:
    """Leave freed memory full of a pattern, so a decoder that reads memory it never wrote gives
    different samples the second time."""
    junk = [np.full(size, 0x5A, dtype=np.uint8) for size in (1 << 10, 1 << 14, 1 << 18, 1 << 22, 1 << 24)]
    junk += [bytes([0xA5]) * (1 << 16) for _ in range(8)]
    del junk


def decode_report(data: bytes, *, stream: bool = True, repeat: bool = True) -> dict:
    """Everything `Report` holds for one input; runs inside the worker (or in-process)."""
    from soundsift.core.audio import load_audio

    def load() -> object:
        return load_audio(data, MODEL_RATE, limits=limits())

    baseline = _status_kib("VmRSS")
    _reset_peak_rss()
    tracemalloc.start()
    first = _outcome(load)
    traced_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    rss_growth = max(0, _status_kib("VmHWM") - baseline) * 1024
    loads = [first]
    if repeat:
        _scribble_heap()
        loads.append(_outcome(load))
    streams = []
    if stream:
        streams.append(_outcome(lambda: _drain_stream(data)))
        if repeat:
            _scribble_heap()
            streams.append(_outcome(lambda: _drain_stream(data)))
    return {"load": loads, "stream": streams, "rss_growth": rss_growth, "traced_peak": traced_peak}


def _worker_main() -> None:
    import soundsift.core.audio  # noqa: F401 - import before measuring the baseline

    limit = _status_kib("VmSize") * 1024 + WORKER_HEADROOM_BYTES
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    stdin, stdout = sys.stdin.buffer, sys.stdout
    stdout.write("ready\n")
    stdout.flush()
    while True:
        header = stdin.read(5)
        if len(header) < 5:
            return
        length, flags = struct.unpack("<IB", header)
        data = stdin.read(length)
        answer = decode_report(data, stream=bool(flags & 1), repeat=bool(flags & 2))
        stdout.write(json.dumps(answer) + "\n")
        stdout.flush()


# --------------------------------------------------------------------------- bookkeeping

CASE_COUNTS: dict[str, int] = {}


def count_case(name: str) -> None:
    """Counted per test; tests/security/conftest.py prints the totals after the run."""
    CASE_COUNTS[name] = CASE_COUNTS.get(name, 0) + 1


def summary_lines(counts: dict[str, int] | None = None) -> Iterable[str]:
    counts = CASE_COUNTS if counts is None else counts
    for name, number in sorted(counts.items()):
        yield f"{number:6d}  {name}"
    yield f"{sum(counts.values()):6d}  fuzz cases in all"


if __name__ == "__main__" and sys.argv[1:] == ["worker"]:
    _worker_main()
