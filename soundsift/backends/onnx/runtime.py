"""ONNX Runtime backend: audio and text encoders from a soundsift export, no torch at serving time.

Mel features come from soundsift.core.features (numpy) and tokens from the `tokenizers` library, so the
serving path needs onnxruntime, tokenizers and numpy only.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

from soundsift.backends.mel import MelSettings
from soundsift.backends.onnx.format import AUDIO_GRAPH, TEXT_GRAPH, read_manifest
from soundsift.errors import ConfigurationError
from soundsift.optional import ONNXRUNTIME

# Texts per text-encoder run on a CPU: 64 full-length texts took 370 MB of activations here, 16 took 90
# MB at about 20 % more time per text; texts are embedded once per label set, so memory wins.
TEXTS_PER_RUN_ON_CPU = 16


class OnnxBackend:
    """CLAP's two encoders on ONNX Runtime, from an exported folder (soundsift.backends.onnx.format).

    ``model_id`` is the name reported in results (the checkpoint the folder was exported from, or
    the folder itself). ``clips_per_call`` clips go through the audio encoder per run (default: one
    on a CPU, the whole batch on a GPU). On a CPU a clip's 4096 tokens already give every matrix
    product thousands of rows, so more clips add no arithmetic efficiency and only grow the working
    set (measured by benchmarks/clips_per_call.py; figures in benchmarks/README.md)."""

    def __init__(
        self,
        folder: Path,
        *,
        model_id: str,
        device: str = "auto",
        threads: int | None = None,
        fp16: bool = False,
        clips_per_call: int | None = None,
    ) -> None:
        onnxruntime = ONNXRUNTIME.require("the onnx backend")
        from tokenizers import Tokenizer

        providers, self.device = execution_providers(device, fp16)
        self.clips_per_call = clips_per_call or (1 if self.device == "cpu" else None)
        self.texts_per_call = TEXTS_PER_RUN_ON_CPU if self.device == "cpu" else None
        manifest = read_manifest(folder)
        self.model_id = model_id
        self.manifest = manifest
        self.mel_settings = MelSettings(**manifest["mel_settings"])
        self.logit_scale = float(manifest["logit_scale"])
        self.model_frames = int(manifest["model_frames"])
        self.embedding_dim = int(manifest["projection_dim"])
        self._audio = onnxruntime.InferenceSession(
            str(folder / AUDIO_GRAPH), session_options(threads), providers=providers
        )
        # An unfused checkpoint's graph never reads is_longer, and the exporter leaves it out.
        self._audio_inputs = [graph_input.name for graph_input in self._audio.get_inputs()]
        # Each session owns a thread pool whose idle threads spin; the text encoder runs rarely (labels
        # are cached), so its threads must not spin and steal the cores the audio encoder needs.
        self._text = onnxruntime.InferenceSession(
            str(folder / TEXT_GRAPH), session_options(threads, spin=False), providers=providers
        )
        tokenizer_settings = manifest["tokenizer"]
        self._tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self._tokenizer.enable_truncation(tokenizer_settings["max_length"])
        self._tokenizer.enable_padding(pad_id=tokenizer_settings["pad_id"])
        self._lock = threading.Lock()

    def embed_audio(self, features: np.ndarray, is_longer: np.ndarray) -> np.ndarray:
        if features.shape[-2] != self.model_frames:
            features = self._stretched(features, is_longer)
        inputs = {"input_features": features, "is_longer": is_longer}
        return self._run_in_parts(self._audio, {name: inputs[name] for name in self._audio_inputs}, self.clips_per_call)

    def _stretched(self, features: np.ndarray, is_longer: np.ndarray) -> np.ndarray:
        """The mel frames stretched to the model's. A clip no longer than the window reads only its
        first channel (the other three are the fused checkpoints' crops, which only longer clips
        use), so in a batch without a longer clip that channel is stretched once and repeated:
        a quarter of the work, about 1 ms per clip on 2 cores."""
        if features.shape[1] == 1 or is_longer.any():
            return bicubic_resize_rows(features, self.model_frames, axis=-2)
        first = bicubic_resize_rows(features[:, :1], self.model_frames, axis=-2)
        return np.repeat(first, features.shape[1], axis=1)

    def embed_text(self, texts: list[str]) -> np.ndarray:
        encodings = self._tokenizer.encode_batch(texts)
        ids = np.array([encoding.ids for encoding in encodings], dtype=np.int64)
        mask = np.array([encoding.attention_mask for encoding in encodings], dtype=np.int64)
        return self._run_in_parts(self._text, {"input_ids": ids, "attention_mask": mask}, self.texts_per_call)

    def _run_in_parts(self, session: Any, inputs: dict[str, np.ndarray], step: int | None) -> np.ndarray:
        """``session`` on ``step`` rows of every input at a time (all at once when None)."""
        count = len(next(iter(inputs.values())))
        size = step or max(1, count)
        parts = []
        with self._lock:
            for start in range(0, count, size):
                (embeddings,) = session.run(None, {name: value[start : start + size] for name, value in inputs.items()})
                parts.append(embeddings)
        return np.concatenate(parts) if parts else np.zeros((0, self.embedding_dim), np.float32)


def session_options(threads: int | None = None, *, spin: bool = True) -> Any:
    """ONNX Runtime session options as soundsift serves with: intra-op threads = physical cores
    unless given, subnormals flushed, all graph optimisations."""
    onnxruntime = ONNXRUNTIME.require("the onnx backend")

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads or physical_cores()
    options.inter_op_num_threads = 1
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Subnormal floats slow CPU arithmetic many-fold; flushing them to zero changes no score
    # (they are below 1e-38) and made the int8 audio encoder 1.6x faster here.
    options.add_session_config_entry("session.set_denormal_as_zero", "1")
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def physical_cores() -> int:
    """Physical cores available to this process (hyper-threads do not help ONNX Runtime's matmuls)."""
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return available
    cores = {
        (block.get("physical id", "").strip(), block.get("core id", "").strip())
        for block in (
            {key.strip(): value for key, value in (line.split(":", 1) for line in part.splitlines() if ":" in line)}
            for part in text.split("\n\n")
        )
        if "core id" in block
    }
    return max(1, min(available, len(cores) or available))


def execution_providers(device: str, fp16: bool = False) -> tuple[list[Any], str]:
    """ONNX Runtime providers for ``device`` and the device name; ConfigurationError when they cannot work."""
    onnxruntime = ONNXRUNTIME.require("the onnx backend")
    providers, resolved = _providers(onnxruntime, device)
    if fp16 and resolved == "cpu":
        raise ConfigurationError("fp16 ONNX needs the CUDA execution provider; on a CPU use --quantize int8")
    return providers, resolved


def _providers(onnxruntime: Any, device: str) -> tuple[list[Any], str]:
    available = onnxruntime.get_available_providers()
    if device == "cpu" or (device == "auto" and "CUDAExecutionProvider" not in available):
        return ["CPUExecutionProvider"], "cpu"
    if "CUDAExecutionProvider" not in available:
        raise ConfigurationError(f"device {device!r} needs onnxruntime-gpu (CUDAExecutionProvider is not available)")
    index = int(device.split(":")[1]) if ":" in device else 0
    return [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"], f"cuda:{index}"


def bicubic_resize_rows(matrix: np.ndarray, rows: int, axis: int = -2) -> np.ndarray:
    """Resize ``axis`` to ``rows`` like torch's bicubic interpolate with align_corners=True (A = -0.75).

    HTSAT stretches 1001 mel frames to 1024 this way inside the model; the ONNX backend does it here,
    where it is four taps per row instead of a slow generic Resize operator.
    """
    source_rows = matrix.shape[axis]
    scale = np.float32((source_rows - 1) / (rows - 1)) if rows > 1 else np.float32(0)
    position = np.arange(rows, dtype=np.float32) * scale
    base = np.floor(position).astype(np.int64)
    t = position - base.astype(np.float32)
    weights = _cubic_weights(t)
    moved = np.moveaxis(matrix, axis, 0)
    out = np.zeros((rows, *moved.shape[1:]), dtype=np.float32)
    for tap in range(4):
        index = np.clip(base + tap - 1, 0, source_rows - 1)
        out += weights[tap].reshape(-1, *([1] * (moved.ndim - 1))) * moved[index]
    return np.moveaxis(out, 0, axis)


def _cubic_weights(t: np.ndarray, a: float = -0.75) -> np.ndarray:
    """Keys cubic convolution weights for taps at offsets -1, 0, 1, 2."""
    a = np.float32(a)

    def near(x: np.ndarray) -> np.ndarray:
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x: np.ndarray) -> np.ndarray:
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    return np.stack([far(t + 1), near(t), near(1 - t), far(2 - t)]).astype(np.float32)
