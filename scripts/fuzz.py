"""Long-run fuzzing of the audio decoder: the properties of tests/security/test_fuzz_decoder.py
with many more inputs than CI runs.

    python scripts/fuzz.py --examples 20000 --seconds 1800

Inputs are real ESC-50 clips (../shared) re-encoded as WAV/FLAC/Ogg/MP3/AIFF/W64/CAF/M4A/WebM
and mutated 1-6 times (bit flips, overwrites, truncation, duplicated/removed ranges, header fields
rewritten to boundary values, Ogg checksums repaired), plus pure random bytes. Each input is
decoded in an isolated worker process (tests/security/fuzzing.py): a hang, a crash, an exception
that is not a SoundsiftError, non-finite or non-mono output, two decodes that differ, or memory
past the budget is a failure. Each failing input is written once per kind of failure to --out
(default $TMPDIR/soundsift-fuzz-findings/) as <sha256>.bin with a .txt beside it that says what went wrong and how
the input was made. Prints the number of cases run; exits 1 when anything failed.

``--engine atheris`` runs the same property in-process under atheris (coverage-guided over the
Python code; libFuzzer's -timeout and -rss_limit_mb stand in for the worker's limits) and takes
libFuzzer flags after ``--``.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = Path(tempfile.gettempdir()) / "soundsift-fuzz-findings"
sys.path.insert(0, str(ROOT))

from tests.security import fuzzing  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=20_000, help="most inputs to try (default 20000)")
    parser.add_argument("--seconds", type=float, default=1800.0, help="stop after this long (default 1800)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: time-based, printed)")
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"folder for failing inputs (default {DEFAULT_OUT})"
    )
    parser.add_argument("--clips", type=int, default=3, help="ESC-50 clips in the seed corpus")
    parser.add_argument("--clip-seconds", type=float, default=1.0, help="length of each seed clip")
    parser.add_argument("--engine", choices=["mutate", "atheris"], default="mutate")
    parser.add_argument("--budget-mb", type=float, default=fuzzing.MEMORY_BUDGET_BYTES / 2**20)
    parser.add_argument("--timeout", type=float, default=fuzzing.CASE_TIMEOUT_S, help="seconds per input")
    parser.add_argument("libfuzzer_args", nargs="*", help="after --: flags for atheris/libFuzzer")
    args = parser.parse_args(argv)
    if args.engine == "atheris":
        return run_atheris(args)
    return run_mutations(args)


def make_input(rng: random.Random, seeds: list[tuple[str, bytes]]) -> tuple[bytes, str]:
    roll = rng.random()
    if roll < 0.05:
        size = rng.choice([0, 1, 2, 4, 12, 44, 100, 1000, 10_000])
        return rng.randbytes(size), f"random {size} bytes"
    name, data = rng.choice(seeds)
    if roll < 0.08:
        # A real header with random bytes after it.
        cut = rng.randint(0, min(len(data), 200))
        return data[:cut] + rng.randbytes(rng.randint(0, 4000)), f"{name}: first {cut} bytes + random tail"
    mutated, applied = fuzzing.mutate(data, rng, rng.randint(1, 6))
    return mutated, f"{name}: {', '.join(applied)}"


def signature(found: list[str]) -> str:
    """The kind of failure, without the numbers that change from input to input."""
    return " | ".join(sorted({re.sub(r"[0-9a-f]{16}|\d+(\.\d+)?", "#", problem)[:160] for problem in found}))


def run_mutations(args: argparse.Namespace) -> int:
    seed = args.seed if args.seed is not None else int(time.time())
    rng = random.Random(seed)
    seeds = sorted(fuzzing.seed_corpus(args.clips, args.clip_seconds).items())
    budget = int(args.budget_mb * 2**20)
    print(f"seed {seed}; {len(seeds)} seed files; up to {args.examples} inputs or {args.seconds:g} s", flush=True)
    started = time.monotonic()
    seen: dict[str, int] = {}
    failures = accepted = 0
    cases = 0
    with fuzzing.DecoderWorker(timeout_s=args.timeout) as worker:
        while cases < args.examples and time.monotonic() - started < args.seconds:
            data, recipe = make_input(rng, seeds)
            report = worker.run(data)
            cases += 1
            accepted += report.accepted
            found = fuzzing.problems(report, budget=budget)
            if found:
                failures += 1
                kind = signature(found)
                seen[kind] = seen.get(kind, 0) + 1
                if seen[kind] == 1:
                    path = save(args.out, data, recipe, found, report)
                    print(f"[{cases}] NEW FAILURE: {'; '.join(found)[:300]}\n    {recipe[:200]}\n    -> {path}")
            if cases % 1000 == 0:
                rate = cases / (time.monotonic() - started)
                print(f"[{cases}] {rate:.0f} inputs/s, {accepted} decoded, {failures} failing", flush=True)
    elapsed = time.monotonic() - started
    print(f"\n{cases} cases run in {elapsed:.0f} s (seed {seed}): {accepted} decoded, "
          f"{cases - accepted} rejected, {failures} failing, {len(seen)} kinds of failure")  # fmt: skip
    for kind, count in sorted(seen.items(), key=lambda item: -item[1]):
        print(f"  {count:6d}  {kind}")
    return 1 if failures else 0


def save(folder: Path, data: bytes, recipe: str, found: list[str], report: fuzzing.Report) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(data).hexdigest()[:24]
    path = folder / f"{digest}.bin"
    path.write_bytes(data)
    details = [f"made by: {recipe}", *[f"problem: {p}" for p in found], f"report: {report}"]
    path.with_suffix(".txt").write_text("\n".join(details) + "\n")
    return path


def run_atheris(args: argparse.Namespace) -> int:
    try:
        import atheris
    except ImportError:
        print("atheris is not installed: pip install atheris", file=sys.stderr)
        return 2
    with atheris.instrument_imports():
        import soundsift.core.audio  # noqa: F401
    cases = 0
    budget = int(args.budget_mb * 2**20)

    def one_input(data: bytes) -> None:
        nonlocal cases
        cases += 1
        report = fuzzing.Report("done", **fuzzing.decode_report(data))
        found = fuzzing.problems(report, budget=budget)
        if found:
            raise AssertionError("; ".join(found))

    args.out.mkdir(parents=True, exist_ok=True)
    corpus = args.out / "atheris-corpus"
    corpus.mkdir(exist_ok=True)
    for name, data in fuzzing.seed_corpus(args.clips, args.clip_seconds).items():
        (corpus / name.replace(":", "_")).write_bytes(data)
    flags = [
        sys.argv[0],
        str(corpus),
        f"-runs={args.examples}",
        f"-max_total_time={int(args.seconds)}",
        f"-timeout={int(args.timeout)}",
        f"-rss_limit_mb={int(args.budget_mb) + 1024}",
        f"-artifact_prefix={args.out}/",
        "-max_len=65536",
        *args.libfuzzer_args,
    ]
    import atexit

    atexit.register(lambda: print(f"\n{cases} cases run (atheris)", flush=True))
    atheris.Setup(flags, one_input)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main())
