"""Export a CLAP checkpoint to ONNX: audio encoder and text encoder, each with its projection.

Needs torch and transformers (the onnx backend that serves the result does not). The audio encoder
is exported through soundsift.backends.onnx.htsat_graph, which re-expresses HTSAT for ONNX Runtime (and gets the
fused checkpoints' ``is_longer`` branch right).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import shutil
import sys
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from soundsift.backends.mel import MelSettings
from soundsift.backends.onnx.format import (
    AUDIO_GRAPH,
    FORMAT,
    MANIFEST,
    OPSET,
    TEXT_GRAPH,
    cache_folder,
    is_exported,
)
from soundsift.errors import ConfigurationError, ModelLoadError
from soundsift.optional import TORCH, TRANSFORMERS

QUANTIZATIONS = ("none", "int8")


def export(
    model: str,
    out: Path,
    *,
    quantize: str = "none",
    quantize_encoders: tuple[str, ...] = ("audio", "text"),
    opset: int = OPSET,
    fp16: bool = False,
) -> Path:
    """Write audio.onnx, text.onnx, tokenizer.json and manifest.json into ``out``.

    ``fp16`` stores the encoders that are not int8-quantized in float16 (inputs and outputs stay
    float32), for GPUs; on a CPU, int8 is the fast choice."""
    import torch

    from soundsift.backends.torch import load_checkpoint

    if quantize not in QUANTIZATIONS:
        raise ValueError(f"quantize must be one of {QUANTIZATIONS}")
    checkpoint = load_checkpoint(model)
    clap = checkpoint.model.float().eval()
    tokenizer = checkpoint.processor.tokenizer
    out.mkdir(parents=True, exist_ok=True)
    # The tracer warns about every Python branch on shapes; all of them are fixed by the model's
    # constant input size (10 s of 64-bin mels), which the parity tests check.
    with tempfile.TemporaryDirectory() as scratch, torch.no_grad(), warnings.catch_warnings(), _quiet_root_logger():
        warnings.simplefilter("ignore")
        raw_audio, raw_text = Path(scratch) / AUDIO_GRAPH, Path(scratch) / TEXT_GRAPH
        _export_audio(clap, checkpoint.mel_settings, raw_audio, opset)
        _export_text(clap, raw_text, opset)
        for raw, encoder in ((raw_audio, "audio"), (raw_text, "text")):
            if quantize == "int8" and encoder in quantize_encoders:
                _quantize_int8(raw, out / raw.name)
            elif fp16:
                _to_float16(raw, out / raw.name)
            else:
                shutil.copy(raw, out / raw.name)
    tokenizer.backend_tokenizer.save(str(out / "tokenizer.json"))
    manifest = {
        "format": FORMAT,
        "source_model": model,
        "source_revision": _revision(clap),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "opset": opset,
        "quantization": {
            encoder: (quantize if encoder in quantize_encoders else "none") for encoder in ("audio", "text")
        },
        "float16": {
            encoder: fp16 and not (quantize == "int8" and encoder in quantize_encoders) for encoder in ("audio", "text")
        },
        "mel_settings": asdict(checkpoint.mel_settings),
        "logit_scale": checkpoint.logit_scale,
        "model_frames": model_frames(clap),
        "projection_dim": int(clap.config.projection_dim),
        "tokenizer": {"max_length": 77, "pad_id": tokenizer.pad_token_id},
        "versions": _versions(),
        "files": {name: _sha256(out / name) for name in (AUDIO_GRAPH, TEXT_GRAPH, "tokenizer.json")},
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return out


def export_to_cache(model: str, quantize: str, quantize_encoders: tuple[str, ...], fp16: bool = False) -> Path:
    """Export a checkpoint once into the first-use cache (soundsift.backends.onnx.format.cache_folder)."""
    folder = cache_folder(model, quantize, quantize_encoders, fp16)
    if not is_exported(folder):
        if not (TORCH.available() and TRANSFORMERS.available()):
            raise ModelLoadError(
                f"{model!r} is not an exported ONNX folder (it has no {MANIFEST}), and exporting it needs torch "
                "and transformers: pip install 'soundsift[torch]', or run `soundsift export --model "
                f"{model} --out DIR` where they are installed and set SOUNDSIFT_MODEL=DIR"
            )
        print(f"soundsift: exporting {model} to ONNX in {folder} (once; later runs reuse it)", file=sys.stderr)
        staging = folder.with_name(folder.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        export(model, staging, quantize=quantize, quantize_encoders=quantize_encoders, fp16=fp16)
        shutil.rmtree(folder, ignore_errors=True)
        staging.rename(folder)
    return folder


def _export_audio(clap: Any, mel: MelSettings, path: Path, opset: int) -> None:
    import copy

    import torch

    from soundsift.backends.onnx.htsat_graph import AudioGraph, supports

    if not supports(clap):
        raise ConfigurationError(
            "ONNX export needs every HTSAT stage's grid to split into whole attention windows (true of the "
            "released CLAP checkpoints); this checkpoint does not, so use --backend torch"
        )
    encoder = AudioGraph(copy.deepcopy(clap)).eval()
    channels = 4 if mel.fusion else 1
    # Traced at the model's own frame count, so the graph has no Resize: the backend stretches the
    # mel frames in numpy (soundsift.backends.onnx.runtime.bicubic_resize_rows), exactly as the model would.
    features = torch.randn(2, channels, model_frames(clap), mel.n_mels)
    is_longer = torch.tensor([[True], [False]])
    torch.onnx.export(
        encoder,
        (features, is_longer),
        str(path),
        dynamo=False,
        opset_version=opset,
        input_names=["input_features", "is_longer"],
        output_names=["audio_embeds"],
        dynamic_axes={"input_features": {0: "batch"}, "is_longer": {0: "batch"}, "audio_embeds": {0: "batch"}},
    )


def model_frames(clap: Any) -> int:
    """Time frames HTSAT works on (spec_size x freq_ratio, 1024 for the released checkpoints)."""
    audio = clap.config.audio_config
    return int(audio.spec_size * (audio.spec_size // audio.num_mel_bins))


def _export_text(clap: Any, path: Path, opset: int) -> None:
    import torch
    from torch import nn

    class TextEncoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.text_model, self.projection = clap.text_model, clap.text_projection

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            pooled = self.text_model(input_ids=input_ids, attention_mask=attention_mask).pooler_output
            return nn.functional.normalize(self.projection(pooled), dim=-1)

    ids = torch.tensor([[0, 100, 200, 2], [0, 300, 2, 1]])
    mask = (ids != 1).long()
    torch.onnx.export(
        TextEncoder().eval(),
        (ids, mask),
        str(path),
        dynamo=False,
        opset_version=opset,
        input_names=["input_ids", "attention_mask"],
        output_names=["text_embeds"],
        dynamic_axes={
            "input_ids": {0: "batch", 1: "tokens"},
            "attention_mask": {0: "batch", 1: "tokens"},
            "text_embeds": {0: "batch"},
        },
    )


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """onnxruntime's quantizer logs advice on the root logger at WARNING; keep the CLI output clean."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def _to_float16(source: Path, target: Path) -> None:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    onnx.save(convert_float_to_float16(onnx.load(str(source)), keep_io_types=True), str(target))


def _quantize_int8(source: Path, target: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(source), str(target), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm", "Gather"]
    )


def _revision(clap: Any) -> str | None:
    return getattr(clap.config, "_commit_hash", None)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _versions() -> dict[str, str]:
    import onnxruntime
    import torch
    import transformers

    from soundsift._version import __version__

    return {
        "soundsift": __version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "onnxruntime": onnxruntime.__version__,
        "numpy": np.__version__,
    }
