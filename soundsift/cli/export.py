"""`soundsift export`: a CLAP checkpoint to ONNX."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from soundsift.backends.onnx.calibration import CALIBRATION_METHODS, KEEP_FLOAT
from soundsift.backends.onnx.format import read_manifest
from soundsift.cli.common import EXIT_OK
from soundsift.core.gallery import resolve_model
from soundsift.errors import UsageError


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "export",
        help="export a CLAP checkpoint to ONNX for the onnx backend",
        description="Write audio.onnx and text.onnx (each encoder with its projection; fused checkpoints "
        "included), tokenizer.json and manifest.json (source model, opset, quantization, checksums) into "
        "--out. Needs torch and transformers; serving the result needs only onnxruntime.",
    )
    parser.add_argument(
        "--model", required=True, help="hub id or local folder of a CLAP checkpoint, or an alias (soundsift models)"
    )
    parser.add_argument("--out", required=True, type=Path, help="folder to write")
    parser.add_argument(
        "--quantize",
        choices=["none", "int8", "int8-static"],
        default="none",
        help="int8: dynamic (int8 weights, activations quantized on the fly); int8-static: the audio encoder's "
        "activations too, with ranges calibrated on --calibrate (QDQ), the text encoder dynamic",
    )
    parser.add_argument(
        "--calibrate",
        metavar="FOLDER",
        help="int8-static: audio to calibrate on, ideally recordings like those you will classify (default: the "
        "bundled example clips); one file in five is held out and the cosine to float32 on it is recorded",
    )
    parser.add_argument(
        "--keep-float",
        type=int,
        default=KEEP_FLOAT,
        metavar="N",
        help=f"int8-static: keep in float the nodes reading the N activations that quantization hurts most, "
        f"measured on the calibration clips (default {KEEP_FLOAT}; 0 keeps only those kept by rule)",
    )
    parser.add_argument(
        "--calibration-method",
        choices=list(CALIBRATION_METHODS),
        default="minmax",
        help="int8-static: how activation ranges are chosen from the calibration clips (default minmax)",
    )
    parser.add_argument(
        "--quantize-encoders",
        default="audio,text",
        help="comma-separated encoders that --quantize applies to (default audio,text)",
    )
    parser.add_argument(
        "--fp16", action="store_true", help="store the encoders that are not int8 in float16 (for GPUs)"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    encoders = tuple(part.strip() for part in args.quantize_encoders.split(",") if part.strip())
    if not set(encoders) <= {"audio", "text"}:
        raise UsageError("--quantize-encoders takes audio, text or audio,text")
    if args.keep_float < 0:
        raise UsageError("--keep-float takes 0 or more")
    if args.calibrate and args.quantize != "int8-static":
        raise UsageError("--calibrate is for --quantize int8-static")
    from soundsift.backends.onnx.export import export
    from soundsift.core.calibration import AudioCalibration

    started = time.perf_counter()
    model = args.model if Path(args.model).expanduser().exists() else resolve_model(args.model)
    calibration = AudioCalibration(args.calibrate) if args.quantize == "int8-static" else None
    folder = export(
        model,
        args.out,
        quantize=args.quantize,
        quantize_encoders=encoders,
        fp16=args.fp16,
        calibration=calibration,
        calibration_method=args.calibration_method,
        keep_float=args.keep_float,
    )
    sizes = ", ".join(f"{p.name} {p.stat().st_size / 1e6:.1f} MB" for p in sorted(folder.glob("*.onnx")))
    print(f"exported {args.model} to {folder} in {time.perf_counter() - started:.1f} s ({sizes})")
    record = read_manifest(folder).get("calibration")
    if record:
        print(calibration_summary(record))
    return EXIT_OK


def calibration_summary(record: dict[str, Any]) -> str:
    """One line on what static int8 was calibrated on and how close it stays to float32."""
    audio = record["audio_cosine_to_fp32"]
    line = (
        f"calibrated ({record['method']}) on {record['count']} clips of {record['source']}; audio cosine to fp32 "
        f"on {audio['clips']} {audio['measured_on']}: mean {audio['mean']:.5f}, min {audio['min']:.5f}"
    )
    text = record.get("text_cosine_to_fp32")
    if text:
        line += (
            f"; text cosine to fp32 on {text['texts']} label prompts: mean {text['mean']:.5f}, min {text['min']:.5f}"
        )
    kept = record["nodes_kept_float"]
    measured = sum(len(entry["nodes"]) for entry in kept["by_measurement"])
    return line + f"; kept in float: {len(kept['by_rule'])} nodes by rule, {measured} by measured error"
