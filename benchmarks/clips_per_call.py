"""How many clips the ONNX audio encoder should run at once on a CPU (the ``clips_per_call`` setting).

Each setting runs in a fresh process (so its peak RSS is its own) that classifies the same clips in
batches of ``--batch`` through the public Classifier, with the onnx backend splitting every batch
into runs of N clips. The settings alternate over ``--rounds`` so a change in the machine's load
hits all of them alike; the load average is printed before and after.

    python benchmarks/clips_per_call.py                                   # full-size random int8 model
    python benchmarks/clips_per_call.py --model DIR --quantize none --sizes 1 8 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCHMARKS))

from cpu_speed import esc50, peak_rss_mb  # noqa: E402


def child(args: argparse.Namespace) -> None:
    from soundsift import Classifier

    paths, classes = esc50(args.clips)
    classifier = Classifier(
        model=args.model,
        backend="onnx",
        quantize=args.quantize,
        device="cpu",
        batch_size=args.batch,
        clips_per_call=args.child,
    )
    prepared = classifier.prepare_labels(classes)
    classifier.classify_batch(paths[: args.batch], prepared)  # warm-up: one-off costs are not measured
    started = time.perf_counter()
    classifier.classify_batch(paths, prepared)
    seconds = time.perf_counter() - started
    print(json.dumps({"clips_per_s": len(paths) / seconds, "peak_rss_mb": peak_rss_mb()}))


def measure(args: argparse.Namespace, size: int) -> dict[str, float]:
    command = [sys.executable, __file__, "--child", str(size), "--model", args.model, "--quantize", args.quantize]
    command += ["--clips", str(args.clips), "--batch", str(args.batch)]
    done = subprocess.run(command, capture_output=True, text=True, check=True, env={**os.environ, "TQDM_DISABLE": "1"})
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="/tmp/clap-random-full", help="checkpoint folder (random_model.py)")
    parser.add_argument("--quantize", default="int8", choices=["none", "int8", "int8-static"])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 2, 4, 8], help="clips per encoder run")
    parser.add_argument("--batch", type=int, default=8, help="clips per classify batch (the engine's batch)")
    parser.add_argument("--clips", type=int, default=24, help="ESC-50 fold-1 clips classified per run")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", help="also write the figures here")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args)
        return
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    runs: dict[int, list[dict[str, float]]] = {size: [] for size in args.sizes}
    for round_index in range(args.rounds):
        order = args.sizes if round_index % 2 == 0 else list(reversed(args.sizes))
        for size in order:
            runs[size].append(measure(args, size))
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    print(f"\n{args.clips} clips in batches of {args.batch}, onnx {args.quantize}, {args.rounds} rounds\n")
    print("| clips per encoder run | clips/s (each round) | peak RSS |")
    print("| --- | --- | --- |")
    for size, results in runs.items():
        speeds = ", ".join(f"{result['clips_per_s']:.2f}" for result in results)
        print(f"| {size} | {speeds} | {max(result['peak_rss_mb'] for result in results):.0f} MB |")
    if args.json:
        Path(args.json).write_text(json.dumps({str(size): results for size, results in runs.items()}, indent=2))


if __name__ == "__main__":
    main()
