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
from soundsift.backends.onnx.calibration import CALIBRATION_METHODS, KEEP_FLOAT, CalibrationSet, CalibrationSource
from soundsift.backends.onnx.format import (
    AUDIO_GRAPH,
    FORMAT,
    MANIFEST,
    OPSET,
    TEXT_GRAPH,
    cache_folder,
    is_exported,
)
from soundsift.backends.onnx.graph_edits import run_fusion_only_for_longer_clips
from soundsift.errors import ConfigurationError, ModelLoadError
from soundsift.optional import TORCH, TRANSFORMERS

QUANTIZATIONS = ("none", "int8", "int8-static")
# Static int8 quantizes these operators of the audio graph (every weight of the Swin blocks and the
# patch merges is a Gemm or a MatMul with a constant operand).
STATIC_OP_TYPES = ["MatMul", "Gemm", "Conv"]


def export(
    model: str,
    out: Path,
    *,
    quantize: str = "none",
    quantize_encoders: tuple[str, ...] = ("audio", "text"),
    opset: int = OPSET,
    fp16: bool = False,
    calibration: CalibrationSource | None = None,
    calibration_method: str = "minmax",
    keep_float: int = KEEP_FLOAT,
) -> Path:
    """Write audio.onnx, text.onnx, tokenizer.json and manifest.json into ``out``.

    ``quantize``: "int8" quantizes weights to int8 and activations on the fly (dynamic); "int8-static"
    quantizes the audio encoder's activations too, with ranges calibrated on ``calibration``
    (``calibration_method`` minmax, percentile or entropy), in QDQ form, with the readers of the
    ``keep_float`` most sensitive activations left in float, and the text encoder
    dynamically (see `_quantize_static_int8`); the manifest's ``calibration`` records the files,
    their hashes, the method, the nodes kept in float and the cosine to float32 on held-out clips.
    ``fp16`` stores the encoders that are not int8-quantized in float16 (inputs and outputs stay
    float32), for GPUs; on a CPU, int8 is the fast choice."""
    import torch

    from soundsift.backends.torch import load_checkpoint

    if quantize not in QUANTIZATIONS:
        raise ValueError(f"quantize must be one of {QUANTIZATIONS}")
    if quantize == "int8-static" and calibration is None:
        raise ConfigurationError("--quantize int8-static needs calibration audio (a CalibrationSource)")
    if calibration_method not in CALIBRATION_METHODS:
        raise ConfigurationError(f"calibration method must be one of {', '.join(CALIBRATION_METHODS)}")
    quantized = {
        encoder: _encoder_quantization(quantize, encoder in quantize_encoders, encoder) for encoder in ("audio", "text")
    }
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
        calibration_record: dict[str, Any] | None = None
        for raw, encoder in ((raw_audio, "audio"), (raw_text, "text")):
            if quantized[encoder] == "int8-static":
                assert calibration is not None
                data = calibration.build(checkpoint.mel_settings)
                frames = model_frames(clap)
                feeds = _audio_feeds(raw, data.clips, frames)
                kept = _quantize_static_int8(raw, out / raw.name, feeds, calibration_method, keep_float)
                calibration_record = {
                    **data.record,
                    "method": calibration_method,
                    "format": "QDQ, uint8 activations, int8 per-channel weights"
                    + ("" if has_vnni() else " in a 7-bit range (no VNNI on the exporting CPU)"),
                    "nodes_kept_float": kept,
                    "audio_cosine_to_fp32": _audio_fidelity(raw, out / raw.name, data, frames),
                }
            elif quantized[encoder] == "int8":
                _quantize_int8(raw, out / raw.name)
            elif fp16:
                _to_float16(raw, out / raw.name)
            else:
                shutil.copy(raw, out / raw.name)
        if calibration_record is not None and quantized["text"] != "none":
            calibration_record["text_cosine_to_fp32"] = _text_fidelity(
                raw_text, out / TEXT_GRAPH, data.texts, tokenizer
            )
    tokenizer.backend_tokenizer.save(str(out / "tokenizer.json"))
    manifest = {
        "format": FORMAT,
        "source_model": model,
        "source_revision": _revision(clap),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "opset": opset,
        "quantization": quantized,
        "float16": {encoder: fp16 and quantized[encoder] == "none" for encoder in ("audio", "text")},
        "mel_settings": asdict(checkpoint.mel_settings),
        "logit_scale": checkpoint.logit_scale,
        "model_frames": model_frames(clap),
        "projection_dim": int(clap.config.projection_dim),
        "tokenizer": {"max_length": 77, "pad_id": tokenizer.pad_token_id},
        "versions": _versions(),
        "files": {name: _sha256(out / name) for name in (AUDIO_GRAPH, TEXT_GRAPH, "tokenizer.json")},
    }
    if calibration_record is not None:
        manifest["calibration"] = calibration_record
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return out


def _encoder_quantization(quantize: str, chosen: bool, encoder: str) -> str:
    """What ``quantize`` does to one encoder: static int8 is for the audio encoder; the text encoder
    then gets dynamic int8 (it runs once per new label, and its activations' ranges differ from one
    token sequence to the next, which dynamic quantization follows and a calibrated range cannot)."""
    if not chosen or quantize == "none":
        return "none"
    return "int8" if quantize == "int8-static" and encoder == "text" else quantize


def export_to_cache(
    model: str,
    quantize: str,
    quantize_encoders: tuple[str, ...],
    fp16: bool = False,
    calibration: CalibrationSource | None = None,
) -> Path:
    """Export a checkpoint once into the first-use cache (soundsift.backends.onnx.format.cache_folder)."""
    folder = cache_folder(model, quantize, quantize_encoders, fp16, calibration.fingerprint if calibration else None)
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
        export(
            model, staging, quantize=quantize, quantize_encoders=quantize_encoders, fp16=fp16, calibration=calibration
        )
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
    if mel.fusion:
        run_fusion_only_for_longer_clips(path)


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


def _quantize_static_int8(
    source: Path, target: Path, feeds: list[dict[str, np.ndarray]], method: str, keep_float: int
) -> dict[str, Any]:
    """QDQ static int8 of the audio graph with activation ranges calibrated on ``feeds``; returns
    the quantizable nodes kept in float, by rule and by measurement.

    Choices, each for a reason:
    - uint8 activations and int8 per-channel weights, as ONNX Runtime recommends for x86 CPUs; the
      weights in a 7-bit range (``reduce_range``) only where the exporting CPU lacks VNNI, whose
      absence makes u8 x s8 dot products saturate 16-bit sums (with VNNI, the full 8-bit range gave
      the full-size model a held-out cosine to fp32 of 0.99986 against 0.99945 with 7 bits, and ran
      faster); the manifest records which;
    - only products with a constant weight are quantized (``MatMulConstBOnly``): attention's query x
      key and probabilities x value products have a different range in every window, and dynamic
      int8 leaves them in float too;
    - kept in float by rule (`_static_exclusions`): the patch-embedding convolutions, which see the
      raw log-mel scale, and the projection after pooling; together well under 1 % of the work;
    - kept in float by measurement: the nodes reading the ``keep_float`` activations whose
      quantization loses the most (`_most_sensitive`), quantized again with the same ranges.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    methods = {
        "minmax": CalibrationMethod.MinMax,
        "percentile": CalibrationMethod.Percentile,
        "entropy": CalibrationMethod.Entropy,
    }
    excluded = _static_exclusions(source)
    with tempfile.TemporaryDirectory() as scratch:
        cache = Path(scratch) / "ranges.json"  # the second pass reuses the first one's ranges
        source = _without_initializer_identities(source, Path(scratch) / "folded.onnx")

        def quantize(nodes_to_exclude: list[str]) -> None:
            quantize_static(
                str(source),
                str(target),
                _reader(feeds),
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=STATIC_OP_TYPES,
                per_channel=True,
                reduce_range=not has_vnni(),
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                nodes_to_exclude=nodes_to_exclude,
                calibrate_method=methods[method],
                # Products write float32, not int8 again: their readers (residual adds, GELU, softmax)
                # are float, so a quantized output was dequantized at once (51 ms of 345 per clip
                # in standalone DequantizeLinear on the full-size model, and it kept GELU unfused).
                extra_options={"MatMulConstBOnly": True, "OpTypesToExcludeOutputQuantization": STATIC_OP_TYPES},
                calibration_cache_path=str(cache),
            )

        quantize(excluded)
        measured = _most_sensitive(source, target, feeds[:2], keep_float, Path(scratch)) if keep_float else []
        if measured:
            quantize(excluded + [node for entry in measured for node in entry["nodes"]])
    return {"by_rule": excluded, "by_measurement": measured}


def has_vnni() -> bool:
    """Whether this CPU has 8-bit dot-product instructions (x86 VNNI; ARM's dot product), so int8
    products need no reduced weight range."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags = {flag for line in text.splitlines() if line.startswith(("flags", "Features")) for flag in line.split()}
    return bool(flags & {"avx512_vnni", "avx_vnni", "asimddp"})


def _reader(feeds: list[dict[str, np.ndarray]]) -> Any:
    """The feeds as onnxruntime's CalibrationDataReader, one batch at a time."""
    from onnxruntime.quantization import CalibrationDataReader

    class Feeds(CalibrationDataReader):
        def __init__(self) -> None:
            self._feeds = iter(feeds)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._feeds, None)

    return Feeds()


def _most_sensitive(
    source: Path, quantized: Path, feeds: list[dict[str, np.ndarray]], count: int, scratch: Path
) -> list[dict[str, Any]]:
    """The ``count`` quantized activations that lose the most (lowest signal-to-quantization-noise
    ratio, in dB, between each tensor and its quantize-dequantize round trip on calibration clips),
    with the nodes that read them, which are then kept in float."""
    import onnx
    from onnxruntime.quantization import qdq_loss_debug as debug

    augmented = scratch / "augmented.onnx"
    debug.modify_model_output_intermediate_tensors(
        str(quantized), str(augmented), op_types_for_saving=["QuantizeLinear", "DequantizeLinear"]
    )
    matching = debug.create_activation_matching(debug.collect_activations(str(augmented), _reader(feeds)))
    readers: dict[str, list[str]] = {}
    for node in onnx.load(str(source), load_external_data=False).graph.node:
        if node.op_type in STATIC_OP_TYPES:
            for name in node.input:
                readers.setdefault(name, []).append(node.name)
    ranked = sorted(
        (debug.compute_signal_to_quantization_noice_ratio(match["pre_qdq"], match["post_qdq"]), name)
        for name, match in matching.items()
        if name in readers
    )
    return [{"tensor": name, "sqnr_db": round(float(sqnr), 2), "nodes": readers[name]} for sqnr, name in ranked[:count]]


def _without_initializer_identities(source: Path, target: Path) -> Path:
    """The graph with every Identity of an initializer replaced by a copy of that initializer.

    The tracer shares equal weights (the zero biases of a freshly initialized model, say) through
    Identity nodes; ONNX Runtime fuses DequantizeLinear -> Gemm -> into QGemm only when the bias is
    a constant, so a Gemm whose bias came through an Identity stayed a float Gemm (8 of the full-size
    model's 50, among them the most expensive)."""
    import onnx

    model = onnx.load(str(source))
    graph = model.graph
    weights = {initializer.name: initializer for initializer in graph.initializer}
    folded = [node for node in graph.node if node.op_type == "Identity" and node.input[0] in weights]
    if not folded:
        return source
    for node in folded:
        copy = onnx.TensorProto()
        copy.CopyFrom(weights[node.input[0]])
        copy.name = node.output[0]
        graph.initializer.append(copy)
        graph.node.remove(node)
    onnx.save(model, str(target))
    return target


def _static_exclusions(path: Path) -> list[str]:
    """Quantizable nodes kept in float: every product of two activations (attention), every Conv
    (the patch embedding and the fusion branch's mel convolution read log-mels in dB, a range unlike
    anything after the first normalization) and every node after the last ReduceMean (the pooled
    embedding's projection, one row per clip)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    weights = {initializer.name for initializer in graph.initializer}
    # onnxruntime's QDQ quantizer ignores MatMulConstBOnly, so the rule is applied here; the fusion
    # branch's Convs sit in an If's subgraph, which today's quantizer does not enter, and are listed
    # all the same, so the record is whole and a quantizer that does enter leaves them in float.
    excluded = [
        node.name
        for node in _all_nodes(graph)
        if node.op_type == "Conv" or (node.op_type == "MatMul" and not weights.intersection(node.input))
    ]
    pooled = [index for index, node in enumerate(graph.node) if node.op_type == "ReduceMean"]
    if pooled:
        downstream = set(graph.node[pooled[-1]].output)
        for node in graph.node[pooled[-1] + 1 :]:
            if downstream.intersection(node.input):
                downstream.update(node.output)
                if node.op_type in STATIC_OP_TYPES:
                    excluded.append(node.name)
    return excluded


def _all_nodes(graph: Any) -> Iterator[Any]:
    """The nodes of an ONNX graph and of the subgraphs of its If, Loop and Scan nodes."""
    for node in graph.node:
        yield node
        for attribute in node.attribute:
            if attribute.HasField("g"):
                yield from _all_nodes(attribute.g)


def _graph_inputs(path: Path) -> list[str]:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    initializers = {initializer.name for initializer in graph.initializer}
    return [value.name for value in graph.input if value.name not in initializers]


def _audio_feeds(graph: Path, clips: list[tuple[np.ndarray, bool]], frames: int) -> list[dict[str, np.ndarray]]:
    """One batch-1 input per clip, as OnnxBackend.embed_audio feeds the graph."""
    from soundsift.backends.onnx.runtime import bicubic_resize_rows

    names = _graph_inputs(graph)
    feeds = []
    for features, is_longer in clips:
        batch = features[None].astype(np.float32)
        if batch.shape[-2] != frames:
            batch = bicubic_resize_rows(batch, frames, axis=-2)
        values = {"input_features": batch, "is_longer": np.array([[is_longer]], dtype=bool)}
        feeds.append({name: values[name] for name in names})
    return feeds


def _audio_fidelity(reference: Path, quantized: Path, data: CalibrationSet, frames: int) -> dict[str, Any]:
    """Cosine of the quantized audio encoder's embeddings to float32's, on the held-out clips (on
    the calibration clips themselves when there were too few files to hold any out)."""
    clips, measured_on = (data.held_out, "held-out clips") if data.held_out else (data.clips, "calibration clips")
    feeds = _audio_feeds(reference, clips, frames)
    cosine = _cosines(_run_all(reference, feeds), _run_all(quantized, feeds))
    return {"mean": float(cosine.mean()), "min": float(cosine.min()), "clips": len(clips), "measured_on": measured_on}


def _text_fidelity(reference: Path, quantized: Path, texts: list[str], tokenizer: Any) -> dict[str, Any]:
    tokens = tokenizer(texts, padding=True, truncation=True, max_length=77, return_tensors="np")
    feeds = [
        {"input_ids": tokens["input_ids"].astype(np.int64), "attention_mask": tokens["attention_mask"].astype(np.int64)}
    ]
    cosine = _cosines(_run_all(reference, feeds), _run_all(quantized, feeds))
    return {"mean": float(cosine.mean()), "min": float(cosine.min()), "texts": len(texts)}


def _run_all(path: Path, feeds: list[dict[str, np.ndarray]]) -> np.ndarray:
    import onnxruntime

    from soundsift.backends.onnx.runtime import session_options

    session = onnxruntime.InferenceSession(str(path), session_options(), providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(None, feed)[0] for feed in feeds])


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.asarray((a * b).sum(axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1))


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
