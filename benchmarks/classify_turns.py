"""One classify call of two (or more) checkouts of soundsift, timed in turns, call by call.

The figure #25 asks for, "p50 of one classify at most 0.6x today's int8 p50", compares code, not
machines: the speed of a shared machine here drifts by up to 2x within minutes, so two runs one
after the other say little. Each checkout gets its own worker process (``PYTHONPATH`` pointing at
the checkout: e.g. an old commit from ``git worktree add --detach /tmp/old REV``), which loads the
model through the public ``Classifier`` and classifies one file path with the same 50 ESC-50
labels each time it is asked. The driver asks the workers in turns, the order reversed every round,
and waits ``--gap-ms`` before each call: ONNX Runtime's idle threads spin for a while after a run,
and a call right after another process's run shared the cores with those threads (both ran about
1.6x slower). The load average is printed before and after.

    python benchmarks/classify_turns.py --code /tmp/old --code .     # old commit against this one
    python benchmarks/classify_turns.py --code /tmp/old --code . --quantize none --rounds 6 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCHMARKS))

from cpu_speed import esc50, percentile  # noqa: E402


def worker(args: argparse.Namespace) -> None:
    """Load the model, say ready, then classify each path read from stdin and print its milliseconds."""
    from soundsift import Classifier

    paths, classes = esc50(1)
    classifier = Classifier(model=args.model, backend=args.backend, quantize=args.quantize, device="cpu")
    classifier.classify(paths[0], classes)  # warm-up: the label embeddings are cached from here on
    print("ready", flush=True)
    for line in sys.stdin:
        started = time.perf_counter()
        classifier.classify(line.strip(), classes)
        print((time.perf_counter() - started) * 1000, flush=True)


def start_worker(args: argparse.Namespace, code: Path) -> subprocess.Popen[str]:
    environment = {**os.environ, "PYTHONPATH": str(code.resolve()), "TQDM_DISABLE": "1"}
    command = [sys.executable, __file__, "--worker", "--model", args.model]
    command += ["--backend", args.backend, "--quantize", args.quantize]
    process = subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=environment
    )
    assert process.stdout is not None
    if process.stdout.readline().strip() != "ready":
        raise SystemExit(f"the worker for {code} did not start (exit {process.wait()})")
    return process


def timed_call(process: subprocess.Popen[str], path: str) -> float:
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write(path + "\n")
    process.stdin.flush()
    return float(process.stdout.readline())


def run_in_turns(args: argparse.Namespace) -> dict[str, list[float]]:
    paths, _ = esc50(args.clips)
    workers = {str(code): start_worker(args, code) for code in args.code}
    times: dict[str, list[float]] = {name: [] for name in workers}
    try:
        for round_number in range(args.rounds):
            order = list(workers.items())
            if round_number % 2:
                order.reverse()
            for path in paths:
                for name, process in order:
                    time.sleep(args.gap_ms / 1000)
                    times[name].append(timed_call(process, path))
    finally:
        for process in workers.values():
            if process.stdin is not None:
                process.stdin.close()
            process.wait()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--code", type=Path, action="append", help="a checkout's root (repeat; the first is the base)")
    parser.add_argument("--model", default="/tmp/clap-random-full", help="checkpoint folder (random_model.py)")
    parser.add_argument("--backend", default="onnx", choices=["torch", "onnx"])
    parser.add_argument("--quantize", default="int8", choices=["none", "int8", "int8-static"])
    parser.add_argument("--clips", type=int, default=24, help="ESC-50 fold-1 clips classified per round")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--gap-ms", type=float, default=100.0, help="pause before each call")
    parser.add_argument("--json", type=Path, help="also write every call's milliseconds here")
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    if not args.code or len(set(args.code)) < len(args.code):
        parser.error("name each checkout once with --code")
    print(f"load average before: {' '.join(f'{value:.2f}' for value in os.getloadavg())}")
    times = run_in_turns(args)
    print(f"load average after: {' '.join(f'{value:.2f}' for value in os.getloadavg())}")
    base = statistics.median(next(iter(times.values())))
    print("| checkout | calls | p50 ms | p95 ms | p50 vs the first |")
    print("| --- | --- | --- | --- | --- |")
    for name, calls in times.items():
        p50 = statistics.median(calls)
        print(f"| {name} | {len(calls)} | {p50:.1f} | {percentile(calls, 95):.1f} | {p50 / base:.3f} |")
    if args.json:
        args.json.write_text(json.dumps(times, indent=2))


if __name__ == "__main__":
    main()
