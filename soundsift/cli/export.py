"""`soundsift export`: a CLAP checkpoint to ONNX."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

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
    parser.add_argument("--quantize", choices=["none", "int8"], default="none", help="int8 dynamic quantization")
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
    from soundsift.backends.onnx.export import export

    started = time.perf_counter()
    model = args.model if Path(args.model).expanduser().exists() else resolve_model(args.model)
    folder = export(model, args.out, quantize=args.quantize, quantize_encoders=encoders, fp16=args.fp16)
    sizes = ", ".join(f"{p.name} {p.stat().st_size / 1e6:.1f} MB" for p in sorted(folder.glob("*.onnx")))
    print(f"exported {args.model} to {folder} in {time.perf_counter() - started:.1f} s ({sizes})")
    return EXIT_OK
