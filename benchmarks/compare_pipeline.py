"""soundsift vs transformers' zero-shot-audio-classification pipeline: same clips, same model, one run.

Prints clips/s of each, their ratio, and how often the two agree on the top-1 label. Without real
weights it runs the full-size CLAP architecture with random weights (benchmarks/random_model.py), so
the speed is real; agreement is then measured on meaningless scores, and the pipeline's random
`is_longer` choice alone can flip decisions.

    python benchmarks/compare_pipeline.py --clips 40
    python benchmarks/compare_pipeline.py --model laion/clap-htsat-unfused --clips 400
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import torch
from transformers import pipeline

sys.path.insert(0, str(Path(__file__).resolve().parent))
from random_model import full_size_random_model

from soundsift import Classifier
from soundsift.core.audio import load_audio

ESC50 = Path(__file__).resolve().parents[2] / "shared" / "data" / "esc50-16k-fold1"
TEMPLATE = "This is a sound of {}."


def esc50_sample(count: int) -> tuple[list[Path], list[str]]:
    with open(ESC50 / "meta" / "esc50.csv", newline="") as handle:
        rows = sorted(csv.DictReader(handle), key=lambda row: row["filename"])
    classes = sorted({row["category"].replace("_", " ") for row in rows})
    step = max(1, len(rows) // count)
    return [ESC50 / "audio" / row["filename"] for row in rows[::step][:count]], classes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="hub id or folder (default: full-size random-weight CLAP)")
    parser.add_argument("--clips", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument(
        "--unfused",
        action="store_true",
        help="random-weight unfused variant: no random is_longer, so top-1 should agree on every clip",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    random_folder = Path("/tmp/soundsift-clap-random" + ("-unfused" if args.unfused else ""))
    model = args.model or str(full_size_random_model(random_folder, fusion=not args.unfused))
    paths, labels = esc50_sample(args.clips)
    waveforms = [load_audio(path, 48_000).samples for path in paths]
    print(f"model {model}; {len(paths)} ESC-50 clips; {len(labels)} labels; {args.threads} threads")

    reference = pipeline("zero-shot-audio-classification", model=model, device="cpu")
    reference(waveforms[0], candidate_labels=labels, hypothesis_template=TEMPLATE)
    started = time.perf_counter()
    reference_top = [
        reference(waveform, candidate_labels=labels, hypothesis_template=TEMPLATE)[0]["label"] for waveform in waveforms
    ]
    reference_rate = len(waveforms) / (time.perf_counter() - started)

    classifier = Classifier(model=model, device="cpu", batch_size=args.batch_size)
    prepared = classifier.prepare_labels(labels, templates=[TEMPLATE])
    classifier.classify((waveforms[0], 48_000), prepared)
    rates = {}
    for batch_size in (1, args.batch_size):
        started = time.perf_counter()
        clips = [(waveform, 48_000) for waveform in waveforms]
        results = [item.result for item in classifier.iter_results(clips, prepared, batch_size=batch_size)]
        rates[batch_size] = len(waveforms) / (time.perf_counter() - started)
    ours_top = [result.top_label for result in results]
    agreement = sum(a == b for a, b in zip(ours_top, reference_top)) / len(waveforms)

    print(f"{'runner':<42} {'clips/s':>8} {'vs pipeline':>12}")
    print(f"{'transformers pipeline (one clip per call)':<42} {reference_rate:>8.2f} {1.0:>11.2f}x")
    for batch_size, rate in rates.items():
        print(f"{f'soundsift torch, batch {batch_size}':<42} {rate:>8.2f} {rate / reference_rate:>11.2f}x")
    print(f"top-1 agreement with the pipeline: {100 * agreement:.1f}% of {len(waveforms)} clips")


if __name__ == "__main__":
    main()
