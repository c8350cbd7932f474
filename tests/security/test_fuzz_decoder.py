"""Property-based fuzzing of the audio decoder with hypothesis.

Inputs: random bytes, and real ESC-50 clips re-encoded as WAV/FLAC/Ogg (Vorbis, Opus)/MP3/AIFF/
W64/CAF/M4A/WebM then mutated (bit flips, overwrites, truncation anywhere, duplicated and removed
ranges, inserted bytes, header fields rewritten to boundary values such as 0 and 0xFFFFFFFF).

Properties, for ``load_audio(data, 48000, max_duration_s=600)`` and a fully drained
``stream_audio`` (see tests/security/fuzzing.py, which runs each input in a worker process):

* it returns non-empty, finite, float32 mono samples at 48 kHz or raises a SoundsiftError;
  any other exception, a segfault or a hang (no answer in SOUNDSIFT_FUZZ_CASE_TIMEOUT_S) fails;
* two decodes of the same bytes give the same samples (the heap is scribbled on in between);
* decoding allocates at most 256 MiB beyond its output (peak RSS and tracemalloc peak).

Fast tier (CI): SOUNDSIFT_FUZZ_EXAMPLES examples per test (default below), derandomized, no
shrinking. SOUNDSIFT_FUZZ_RANDOM=1 draws fresh inputs; SOUNDSIFT_FUZZ_SHRINK=1 shrinks a failure
to a minimal input. The long run is ``python scripts/fuzz.py`` (see its docstring).
"""

from __future__ import annotations

import io
import os
import struct
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, event, given, settings
from hypothesis import strategies as st

from tests.data.shared import ESC50, shared_path
from tests.security import fuzzing

pytestmark = [pytest.mark.security, pytest.mark.slow]

RANDOM = os.environ.get("SOUNDSIFT_FUZZ_RANDOM") == "1"
PHASES = [Phase.explicit, Phase.reuse, Phase.generate, Phase.target] + (
    [Phase.shrink] if os.environ.get("SOUNDSIFT_FUZZ_SHRINK") == "1" else []
)


def fuzz_settings(default_examples: int) -> settings:
    return settings(
        max_examples=fuzzing.example_count(default_examples),
        deadline=None,
        derandomize=not RANDOM,
        database=None,
        phases=PHASES,
        print_blob=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
    )


@pytest.fixture(scope="module")
def worker():
    with fuzzing.DecoderWorker() as running:
        yield running


shared_path(ESC50, module_level=True)
CORPUS = fuzzing.seed_corpus()
SEED_NAMES = sorted(CORPUS)


def check(
    worker: fuzzing.DecoderWorker, data: bytes, recipe: str, test: str, *, hypothesis_test: bool = False
) -> fuzzing.Report:
    fuzzing.count_case(f"decoder: {test}")
    report = worker.run(data)
    if hypothesis_test:
        event(f"outcome: {report.load[0].get('type', 'decoded') if report.load else report.status}")
    found = fuzzing.problems(report)
    assert not found, f"{recipe} ({len(data)} bytes, starts {data[:16]!r}):\n  " + "\n  ".join(found)
    return report


# --------------------------------------------------------------------------- strategies

MAGIC = [
    b"",
    b"RIFF\xff\xff\xff\xffWAVEfmt ",
    b"RIFF\x00\x00\x00\x00WAVE",
    b"fLaC",
    b"fLaC\x00\x00\x00\x22",
    b"OggS\x00\x02",
    b"ID3\x04\x00\x00",
    b"\xff\xfb\x90\x00",
    b"FORM\x00\x00\x00\x00AIFF",
    b"\x1a\x45\xdf\xa3",
    b"\x00\x00\x00\x18ftypM4A ",
    b"caff\x00\x01\x00\x00",
    b"riff.\x91\xcf\x11",
]


@st.composite
def random_inputs(draw) -> tuple[bytes, str]:
    prefix = draw(st.sampled_from(MAGIC))
    body = draw(st.binary(min_size=0, max_size=2048))
    return prefix + body, f"random bytes after {prefix!r}"


@st.composite
def mutation(draw, size: int):
    position = draw(st.integers(0, max(0, size - 1)))
    kind = draw(st.sampled_from(sorted(fuzzing.MUTATORS)))
    if kind == "bit_flip":
        return kind, (position, draw(st.integers(0, 7)))
    if kind == "overwrite":
        chunk = draw(
            st.one_of(
                st.sampled_from([b"\x00", b"\xff", b"\x00\x00\x00\x00", b"\xff\xff\xff\xff", b"\x7f\xff\xff\xff"]),
                st.binary(min_size=1, max_size=16),
            )
        )
        return kind, (position, chunk)
    if kind == "truncate":
        return kind, (draw(st.integers(0, size)),)
    if kind == "duplicate_range":
        return kind, (position, draw(st.integers(1, 4096)), draw(st.integers(0, size)))
    if kind == "remove_range":
        return kind, (position, draw(st.integers(1, 4096)))
    return kind, (draw(st.integers(0, size)), draw(st.binary(min_size=1, max_size=64)))


@st.composite
def mutated_inputs(draw) -> tuple[bytes, str]:
    name = draw(st.sampled_from(SEED_NAMES))
    data = CORPUS[name]
    applied = []
    for _ in range(draw(st.integers(1, 4))):
        kind, arguments = draw(mutation(len(data)))
        data = fuzzing.MUTATORS[kind](data, *arguments)
        applied.append(f"{kind}{tuple(a if not isinstance(a, bytes) else a[:8] for a in arguments)}")
    if b"OggS" in data[:64] and draw(st.booleans()):
        data = fuzzing.fix_ogg_checksums(data)
        applied.append("fix_ogg_checksums")
    return data, f"{name} after {', '.join(applied)}"


@st.composite
def rewritten_headers(draw) -> tuple[bytes, str]:
    name = draw(st.sampled_from(SEED_NAMES))
    data = CORPUS[name]
    fields = fuzzing.header_fields(data)
    applied = []
    for _ in range(draw(st.integers(1, 3))):
        if not fields:
            break
        header_field = draw(st.sampled_from(fields))
        value = draw(
            st.one_of(st.sampled_from(fuzzing.INTERESTING_U32), st.integers(0, 2 ** (8 * header_field.size) - 1))
        )
        data = fuzzing.rewrite_field(data, header_field, value)
        applied.append(f"{header_field.name}={value:#x}")
    if draw(st.booleans()):
        cut = draw(st.integers(0, len(data)))
        data = data[:cut]
        applied.append(f"truncated to {cut}")
    if b"OggS" in data[:64]:
        data = fuzzing.fix_ogg_checksums(data)
    return data, f"{name} with {', '.join(applied) or 'no header fields'}"


# --------------------------------------------------------------------------- fuzz tests


@fuzz_settings(150)
@given(case=random_inputs())
def test_random_bytes(worker, case):
    check(worker, *case, test="random bytes", hypothesis_test=True)


@fuzz_settings(400)
@given(case=mutated_inputs())
def test_mutated_real_files(worker, case):
    check(worker, *case, test="mutated ESC-50 files", hypothesis_test=True)


@fuzz_settings(300)
@given(case=rewritten_headers())
def test_rewritten_header_fields(worker, case):
    check(worker, *case, test="rewritten header fields", hypothesis_test=True)


@pytest.mark.parametrize("name", SEED_NAMES)
def test_every_seed_file_decodes(worker, name):
    """The unmutated corpus: every format decodes, to the clip's length, deterministically."""
    report = check(worker, CORPUS[name], name, test="seed files")
    assert report.accepted, report.load
    assert abs(report.load[0]["duration_s"] - 0.5) < 0.03


# --------------------------------------------------------------------------- regressions
# Inputs the fuzzer (or the bug reports) found, built here so they run every time.


def _seed(kind: str) -> bytes:
    return CORPUS[next(name for name in SEED_NAMES if name.endswith(f":{kind}"))]


def _long_clip(kind: str) -> bytes:
    samples, rate = fuzzing.loudest_window(fuzzing.esc50_clip_paths(1)[0], 5.0)
    return fuzzing.encode(samples, rate, kind)


def _surround_mkv(channels: int = 8, seconds: float = 0.5) -> bytes:
    """Ordinary 16-bit PCM in Matroska with a 7.1 layout: read by PyAV (libsndfile can't)."""
    import av

    layout = {6: "5.1", 7: "6.1", 8: "7.1"}[channels]
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="matroska") as container:
        stream = container.add_stream("pcm_s16le", rate=48_000)
        stream.layout = layout
        for index in range(int(seconds * 48_000 / 1024)):
            frame = av.AudioFrame.from_ndarray(
                np.zeros((1, 1024 * channels), dtype=np.int16), format="s16", layout=layout
            )
            frame.sample_rate, frame.pts, frame.time_base = 48_000, index * 1024, Fraction(1, 48_000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buffer.getvalue()


def _wav_with_codec_tag(tag: int) -> bytes:
    data = fuzzing.raw_wav(np.zeros(1600, np.int16).tobytes(), channels=1, rate=16_000)
    return data[:20] + struct.pack("<H", tag) + data[22:]


def _aiff_with_rate_exponent(exponent: int) -> bytes:
    data = _seed("aiff")
    return fuzzing.rewrite_field(data, fuzzing.Field("comm.rate_exponent", data.find(b"COMM") + 16, 2, ">"), exponent)


REGRESSIONS = {
    # Known (reported before this suite): 0 samples after resampling.
    "known: 1 sample at 384 kHz resamples to 0 samples": lambda: fuzzing.raw_wav(b"\x00\x10", channels=1, rate=384_000),
    # Known: truncated FLAC gives libsndfile's "lost sync" error, not a SoundsiftError.
    "known: FLAC truncated mid-frame": lambda: _long_clip("flac")[:4000],
    # Known: truncated MP3 decodes to its declared length with an uninitialised tail.
    "known: MP3 (libsndfile) truncated to 30%": lambda: (lambda d: d[: int(len(d) * 0.3)])(_long_clip("mp3")),
    "known: MP3 (LAME) truncated to 50%": lambda: (lambda d: d[: int(len(d) * 0.5)])(_long_clip("mp3-lame.mp3")),
    # Known: a small FLAC of silence decodes to far more memory than the budget (scaled down
    # from the reported 600 s so the fast tier stays fast; the full one is marked slow).
    "known: FLAC bomb, 120 s of 8-channel 96 kHz silence (95 KB)": lambda: fuzzing.silent_flac_bomb(120, 96_000, 8),
    # New: PyAV's to_ndarray segfaults on 8+ channels: the whole process dies.
    "new: 7.1 PCM in Matroska (PyAV path) segfaults": _surround_mkv,
    # New: a WAV whose codec FFmpeg does not know: stream.codec_context is None -> AttributeError.
    "new: WAV with unknown codec tag 0x1234": lambda: _wav_with_codec_tag(0x1234),
    "new: WAV with extensible tag and no extension": lambda: _wav_with_codec_tag(0xFFFE),
    # New: finite float samples near float32's limit overflow to inf in the resampler.
    "new: float WAV at 3e38 overflows to inf when resampled": lambda: fuzzing.wav_bytes(
        np.full(1600, 3e38, np.float32), 16_000, "FLOAT"
    ),
    # Known: an AIFF sample rate's exponent rewritten to 0 (about 1 Hz) or to its maximum: refused
    # for its duration from the header, never decoded into a huge resampled buffer.
    "known: AIFF with sample-rate exponent 0": lambda: _aiff_with_rate_exponent(0),
    "known: AIFF with sample-rate exponent 0x7FFF": lambda: _aiff_with_rate_exponent(0x7FFF),
    # New: libsndfile errors raised while reading (not opening) escape as LibsndfileError.
    "new: FLAC with STREAMINFO total samples rewritten": lambda: fuzzing.rewrite_field(
        _seed("flac"), fuzzing.Field("total", 22, 4, ">"), 0x5DC00
    ),
}


@pytest.mark.parametrize("name", sorted(REGRESSIONS))
def test_regression_inputs(worker, name):
    check(worker, REGRESSIONS[name](), name, test="regression inputs")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "make"),
    [
        ("known: FLAC bomb, 600 s of 8-channel 96 kHz silence (0.5 MB)", lambda: fuzzing.silent_flac_bomb()),
        # A legitimate input at the limits (600 s, stereo, 48 kHz): the block list plus the
        # concatenated copy plus the mono mix hold about 4x the output at once.
        (
            "new: 600 s of stereo 48 kHz FLAC (a valid input at the limits)",
            lambda: fuzzing.silent_flac_bomb(600, 48_000, 2),
        ),
    ],
)
def test_memory_heavy_inputs(name, make):
    with fuzzing.DecoderWorker(timeout_s=120) as own_worker:
        check(own_worker, make(), name, test="memory-heavy inputs")
