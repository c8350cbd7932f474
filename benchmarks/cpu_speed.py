"""CPU speed, side by side: transformers' zero-shot pipeline, soundsift torch, soundsift onnx fp32,
dynamic int8 and static int8, and how close each comes to this machine's limit.

Same clips (ESC-50 fold 1 from ../shared), same 50 ESC-50 labels, same full-size model (random weights
unless --model names real ones). Each runner runs in its own process, so start-up time (process start
to first result) and peak RSS are its own. Prints clips/s at batch 1 and 8, p50/p95 latency of one
classify call, peak RSS, start-up, the ratio to the pipeline, where the time goes (decoding,
features, audio and text encoders; the ONNX audio encoder also by operator), audio-embedding cosine
and top-1 agreement of onnx int8 (and fp32) with soundsift torch.

The limit (benchmarks/hardware_limit.py): FLOPs per clip counted from the exported fp32 audio graph
(MatMul, Gemm, Conv), this machine's GEMM peak measured with ONNX Runtime (fp32 MatMul; int8
MatMulInteger and QLinearMatMul), and each runner's share of the peak of its arithmetic (int8
runners against the int8 peak, the others against fp32) at batch 1 and 8. The load average is
printed before and after: on a shared machine, figures taken under load are not comparable.

    python benchmarks/cpu_speed.py                  # 2 cores: about 4 minutes, plus 3 to export once
    python benchmarks/cpu_speed.py --clips 80 --json speed.json
    python benchmarks/cpu_speed.py --runners pipeline onnx-int8 onnx-int8-static --calibrate DIR
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent
ESC50 = BENCHMARKS.parents[1] / "shared" / "data" / "esc50-16k-fold1"
TEMPLATE = "This is a sound of {}."
RUNNERS = ("pipeline", "torch", "onnx-fp32", "onnx-int8", "onnx-int8-static")
INT8_RUNNERS = ("onnx-int8", "onnx-int8-static")


def esc50(count: int) -> tuple[list[str], list[str]]:
    with open(ESC50 / "meta" / "esc50.csv", newline="") as handle:
        rows = sorted(csv.DictReader(handle), key=lambda row: row["filename"])
    classes = sorted({row["category"].replace("_", " ") for row in rows})
    return [str(ESC50 / "audio" / row["filename"]) for row in rows[:count]], classes


def percentile(values: list[float], percent: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(percent / 100 * (len(ordered) - 1)))]


def peak_rss_mb() -> float:
    """This process's own peak RSS. (getrusage's ru_maxrss survives exec, so a child would report the
    peak of the parent that spawned it.)"""
    status = Path("/proc/self/status").read_text()
    return next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")) / 1024


def pipeline_profile(classify, paths: list[str], labels: list[str], calls: int) -> dict:
    """Time the pipeline's own stages on one clip: transformers' feature extractor, the audio encoder
    (``get_audio_features``, as the pipeline runs it) and encoding the label prompts."""
    import torch

    from soundsift.core.audio import load_audio

    prompts = [TEMPLATE.format(label) for label in labels]
    features, encoder = [], []
    with torch.no_grad():
        for path in paths[:calls]:
            begin = time.perf_counter()
            inputs = classify.feature_extractor(
                [load_audio(path, 48_000).samples], sampling_rate=48_000, return_tensors="pt"
            )
            featured = time.perf_counter()
            classify.model.get_audio_features(**inputs)
            features.append(featured - begin)
            encoder.append(time.perf_counter() - featured)
        begin = time.perf_counter()
        classify.model.get_text_features(**classify.tokenizer(prompts, return_tensors="pt", padding=True))
        text_s = time.perf_counter() - begin
    return {
        "features": 1000 * statistics.median(features),
        "audio_encoder": 1000 * statistics.median(encoder),
        "text_encoder_50_labels_every_call": 1000 * text_s,
    }


def run_pipeline(model: str, paths: list[str], labels: list[str], args) -> dict:
    from transformers import pipeline

    from soundsift.core.audio import load_audio

    classify = pipeline("zero-shot-audio-classification", model=model, device="cpu")
    first = load_audio(paths[0], 48_000).samples
    classify(first, candidate_labels=labels, hypothesis_template=TEMPLATE)
    first_result_at = time.time()
    subset = paths[: args.pipeline_clips]
    latencies = []
    begin = time.perf_counter()
    for path in subset:
        call = time.perf_counter()
        classify(load_audio(path, 48_000).samples, candidate_labels=labels, hypothesis_template=TEMPLATE)
        latencies.append(time.perf_counter() - call)
    batch1 = len(subset) / (time.perf_counter() - begin)
    waveforms = [load_audio(path, 48_000).samples for path in subset]
    begin = time.perf_counter()
    classify(waveforms, candidate_labels=labels, hypothesis_template=TEMPLATE, batch_size=8)
    batch8 = len(subset) / (time.perf_counter() - begin)
    return {
        "first_result_at": first_result_at,
        "batch1": batch1,
        "batch8": batch8,
        "latencies": latencies,
        "top1": {},
        "profile_ms": pipeline_profile(classify, paths, labels, args.latency_calls),
    }


def run_soundsift(model: str, paths: list[str], labels: list[str], args, backend: str) -> dict:
    from soundsift import Classifier

    options = {"backend": "torch"} if backend == "torch" else {"backend": "onnx"}
    if backend == "onnx-int8":
        options["quantize"] = "int8"
    folder = onnx_folder(args, backend) if backend.startswith("onnx") else model
    classifier = Classifier(model=folder, device="cpu", batch_size=8, **options)
    text_begin = time.perf_counter()
    prepared = classifier.prepare_labels(labels, templates=[TEMPLATE])
    text_s = time.perf_counter() - text_begin
    classifier.classify(paths[0], prepared)
    first_result_at = time.time()

    pipeline = classifier.pipeline
    decision = pipeline.decision()
    latencies, decode, features, encoder = [], [], [], []
    for path in paths[: args.latency_calls]:
        call = time.perf_counter()
        clip = pipeline.load(path)
        decoded = time.perf_counter()
        clip_features = pipeline.featurize(clip)
        featured = time.perf_counter()
        (embedding,) = pipeline.embedder.embed_audio([clip_features])
        encoded = time.perf_counter()
        pipeline.score(
            embedding, prepared, decision, source=clip.source, duration_s=clip.duration_s, silent=clip.silent
        )
        latencies.append(time.perf_counter() - call)
        decode.append(decoded - call)
        features.append(featured - decoded)
        encoder.append(encoded - featured)

    rates, tops = {}, {}
    for batch_size, subset in ((1, paths[: args.batch1_clips]), (8, paths)):
        begin = time.perf_counter()
        results = [item.result for item in classifier.iter_results(subset, prepared, batch_size=batch_size)]
        rates[batch_size] = len(subset) / (time.perf_counter() - begin)
        tops = {path: result.top_label for path, result in zip(subset, results)}
    return {
        "embeddings": classifier.embed_audio(paths[: args.embedding_clips]).tolist(),
        "first_result_at": first_result_at,
        "batch1": rates[1],
        "batch8": rates[8],
        "latencies": latencies,
        "top1": tops,
        "profile_ms": {
            "decode": 1000 * statistics.median(decode),
            "features": 1000 * statistics.median(features),
            "audio_encoder": 1000 * statistics.median(encoder),
            "text_encoder_50_labels": 1000 * text_s,
        },
    }


def onnx_folder(args, runner: str) -> str:
    return {"onnx-fp32": args.onnx_fp32, "onnx-int8": args.onnx_int8, "onnx-int8-static": args.onnx_int8_static}[runner]


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def operator_profile(folder: str, paths: list[str], calls: int = 8) -> dict[str, float]:
    """ms per clip (batch 1) for each ONNX operator type in the audio encoder, from ONNX Runtime's
    profiler, on a second session with soundsift's serving options."""
    import onnxruntime

    from soundsift import Classifier
    from soundsift.backends.onnx.runtime import bicubic_resize_rows, session_options

    classifier = Classifier(model=folder, backend="onnx", device="cpu")
    options = session_options()
    options.enable_profiling = True
    options.profile_file_prefix = str(Path(folder) / "operator-profile")
    session = onnxruntime.InferenceSession(str(Path(folder) / "audio.onnx"), options)
    wanted = {graph_input.name for graph_input in session.get_inputs()}  # unfused graphs take no is_longer
    for path in paths[:calls]:
        mels, is_longer = classifier.pipeline.featurizer([classifier.pipeline.load(path).samples])
        mels = bicubic_resize_rows(mels, classifier.backend.model_frames, axis=-2)
        inputs = {"input_features": mels, "is_longer": is_longer}
        session.run(None, {name: value for name, value in inputs.items() if name in wanted})
    trace = Path(session.end_profiling())
    totals: dict[str, float] = {}
    for event in json.loads(trace.read_text()):
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            operator = event["args"]["op_name"]
            totals[operator] = totals.get(operator, 0.0) + event["dur"] / 1000 / calls
    trace.unlink()
    return dict(sorted(totals.items(), key=lambda item: -item[1]))


def child(args) -> None:
    paths, labels = esc50(args.clips)
    if args.runner == "pipeline":
        row = run_pipeline(args.model, paths, labels, args)
    else:
        row = run_soundsift(args.model, paths, labels, args, args.runner)
    row["peak_rss_mb"] = peak_rss_mb()
    if args.runner.startswith("onnx"):
        row["audio_encoder_operators_ms"] = operator_profile(onnx_folder(args, args.runner), paths)
    print("RESULT " + json.dumps(row))


def parent(args) -> None:
    sys.path.insert(0, str(BENCHMARKS))
    from hardware_limit import gemm_peak, graph_flops
    from random_model import full_size_random_model

    from soundsift.backends.onnx.export import export
    from soundsift.core.calibration import AudioCalibration

    model = args.model or str(full_size_random_model(Path("/tmp/soundsift-clap-random")))
    exports = ((args.onnx_fp32, "none"), (args.onnx_int8, "int8"), (args.onnx_int8_static, "int8-static"))
    for folder, quantize in exports:
        if not (Path(folder) / "manifest.json").exists():
            print(f"exporting {quantize} ONNX to {folder} ...", flush=True)
            calibration = AudioCalibration(args.calibrate) if quantize == "int8-static" else None
            export(model, Path(folder), quantize=quantize, calibration=calibration)
    load_before = load_average()
    rows = {}
    for runner in args.runners:
        print(f"running {runner} ...", flush=True)
        spawned_at = time.time()
        command = [
            sys.executable,
            __file__,
            "--child",
            runner,
            "--model",
            model,
            "--clips",
            str(args.clips),
            "--batch1-clips",
            str(args.batch1_clips),
            "--pipeline-clips",
            str(args.pipeline_clips),
            "--latency-calls",
            str(args.latency_calls),
            "--onnx-fp32",
            args.onnx_fp32,
            "--onnx-int8",
            args.onnx_int8,
            "--onnx-int8-static",
            args.onnx_int8_static,
        ]
        completed = subprocess.run(command, capture_output=True, text=True)
        line = next((text for text in completed.stdout.splitlines() if text.startswith("RESULT ")), None)
        if line is None:
            sys.exit(f"{runner} failed:\n{completed.stderr[-3000:]}")
        rows[runner] = json.loads(line[7:])
        rows[runner]["startup_s"] = rows[runner].pop("first_result_at") - spawned_at
    load_after = load_average()
    print("measuring the GEMM peak and counting the graph's FLOPs ...", flush=True)
    limit = {
        "flops": graph_flops(Path(args.onnx_fp32) / "audio.onnx"),
        "peak": gemm_peak(size=args.peak_size, seconds=args.peak_seconds),
        "load_average": {"before": load_before, "after_runners": load_after, "after_peak": load_average()},
    }
    report(rows, limit, args)


def share_of_peak(name: str, clips_per_s: float, limit: dict) -> float:
    """The runner's MatMul/Gemm/Conv arithmetic per second as a share of the peak of its kind."""
    peak = limit["peak"]["int8_gops" if name in INT8_RUNNERS else "fp32_gflops"]
    return clips_per_s * limit["flops"]["total"] / 1e9 / peak


def report(rows: dict, limit: dict, args) -> None:
    flops, peak = limit["flops"], limit["peak"]
    print(
        f"\naudio encoder: {flops['total'] / 1e9:.2f} GFLOP per clip in MatMul/Gemm/Conv "
        f"({', '.join(f'{op} {value / 1e9:.2f}' for op, value in flops['by_type'].items())}); "
        f"GEMM peak here ({peak['size']}^3, ONNX Runtime): fp32 {peak['fp32_gflops']:.0f} GFLOP/s, "
        f"int8 {peak['int8_gops']:.0f} GOP/s (MatMulInteger {peak['int8_matmulinteger_gops']:.0f}, "
        f"QLinearMatMul {peak['int8_qlinearmatmul_gops']:.0f})"
    )
    loads = limit["load_average"]
    print(
        f"load average (1, 5, 15 min): before {loads['before']}; after the runners {loads['after_runners']}; "
        f"after the peak {loads['after_peak']}"
    )
    base = rows.get("pipeline")
    print(
        f"\n{'runner':<18}{'clips/s b1':>11}{'clips/s b8':>11}{'x pipe b1':>10}{'x pipe b8':>10}"
        f"{'% peak b1':>10}{'% peak b8':>10}{'p50 ms':>8}{'p95 ms':>8}{'RSS MB':>8}{'start s':>8}"
    )
    for name, row in rows.items():
        ratio1 = row["batch1"] / base["batch1"] if base else float("nan")
        ratio8 = row["batch8"] / base["batch8"] if base else float("nan")
        row["share_of_peak"] = {
            "batch1": share_of_peak(name, row["batch1"], limit),
            "batch8": share_of_peak(name, row["batch8"], limit),
        }
        print(
            f"{name:<18}{row['batch1']:>11.2f}{row['batch8']:>11.2f}{ratio1:>10.2f}{ratio8:>10.2f}"
            f"{100 * row['share_of_peak']['batch1']:>10.1f}{100 * row['share_of_peak']['batch8']:>10.1f}"
            f"{1000 * percentile(row['latencies'], 50):>8.0f}{1000 * percentile(row['latencies'], 95):>8.0f}"
            f"{row['peak_rss_mb']:>8.0f}{row['startup_s']:>8.1f}"
        )
    print("\nwhere one classify call spends its time (median ms; text encoder = 50 labels once, then cached):")
    for name, row in rows.items():
        if "profile_ms" in row:
            print(f"  {name:<12} " + ", ".join(f"{k} {v:.1f}" for k, v in row["profile_ms"].items()))
    for name, row in rows.items():
        if "audio_encoder_operators_ms" in row:
            operators = row["audio_encoder_operators_ms"]
            shown = ", ".join(f"{op} {ms:.1f}" for op, ms in list(operators.items())[:8])
            print(f"  {name:<12} audio encoder by operator (ms, of {sum(operators.values()):.1f}): {shown}")
    import numpy as np

    if "torch" in rows:
        base_embeddings = np.array(rows["torch"]["embeddings"])
        for name in ("onnx-fp32", "onnx-int8", "onnx-int8-static"):
            if name in rows:
                cosine = (np.array(rows[name]["embeddings"]) * base_embeddings).sum(axis=1)
                print(
                    f"audio embedding cosine {name} vs torch: mean {cosine.mean():.5f}, min {cosine.min():.5f} "
                    f"({len(cosine)} clips)"
                )
    reference = rows.get("torch", {}).get("top1", {})
    for name in ("onnx-fp32", "onnx-int8", "onnx-int8-static"):
        other = rows.get(name, {}).get("top1", {})
        shared = [path for path in reference if path in other]
        if shared:
            agree = sum(reference[p] == other[p] for p in shared) / len(shared)
            print(f"top-1 agreement {name} vs torch: {100 * agree:.1f}% of {len(shared)} ESC-50 fold-1 clips")
    if args.json:
        Path(args.json).write_text(json.dumps({"runners": rows, "limit": limit}, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="hub id or folder (default: full-size random-weight CLAP)")
    parser.add_argument("--clips", type=int, default=400, help="ESC-50 fold-1 clips for batch-8 speed and agreement")
    parser.add_argument("--batch1-clips", type=int, default=60)
    parser.add_argument("--pipeline-clips", type=int, default=32, help="the pipeline is slow: fewer clips")
    parser.add_argument("--latency-calls", type=int, default=30)
    parser.add_argument("--embedding-clips", type=int, default=40, help="clips whose embeddings are compared")
    parser.add_argument("--runners", nargs="+", choices=RUNNERS, default=list(RUNNERS))
    parser.add_argument("--onnx-fp32", default="/tmp/soundsift-onnx-fp32")
    parser.add_argument("--onnx-int8", default="/tmp/soundsift-onnx-int8")
    parser.add_argument("--onnx-int8-static", default="/tmp/soundsift-onnx-int8-static")
    parser.add_argument(
        "--calibrate", help="audio folder static int8 is calibrated on when exported here (default: bundled examples)"
    )
    parser.add_argument("--peak-size", type=int, default=1024, help="M = K = N of the GEMM peak microbenchmark")
    parser.add_argument("--peak-seconds", type=float, default=2.0, help="how long each peak kernel is timed")
    parser.add_argument("--json", help="also write the raw numbers here")
    parser.add_argument("--child", dest="runner", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.runner:
        child(args)
    else:
        parent(args)


if __name__ == "__main__":
    main()
