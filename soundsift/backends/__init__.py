"""Model backends: each turns mel features and texts into L2-normalised CLAP embeddings."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from soundsift.backends.mel import MelSettings
from soundsift.backends.onnx.calibration import CalibrationSource
from soundsift.errors import ConfigurationError
from soundsift.optional import TORCH, TRANSFORMERS


class Backend(Protocol):
    """What the classifier needs from a model runtime."""

    model_id: str
    device: str
    mel_settings: MelSettings
    logit_scale: float
    embedding_dim: int
    clips_per_call: int | None
    """Clips the audio encoder runs at once whatever the batch (None: the whole batch)."""

    def embed_audio(self, features: np.ndarray, is_longer: np.ndarray) -> np.ndarray:
        """(B, C, T, F) features and (B, 1) is_longer -> (B, D) unit vectors."""
        ...

    def embed_text(self, texts: list[str]) -> np.ndarray:
        """N texts -> (N, D) unit vectors."""
        ...


def load_backend(
    kind: str,
    model: str,
    *,
    device: str = "auto",
    fp16: bool = False,
    quantize: str = "none",
    quantize_encoders: tuple[str, ...] = ("audio", "text"),
    threads: int | None = None,
    clips_per_call: int | None = None,
    calibration: CalibrationSource | None = None,
) -> Backend:
    """The backend ``kind`` ("torch" or "onnx") for ``model``; each imports its runtime only when chosen.

    For onnx, ``model`` is an exported folder, or a checkpoint exported once on first use (with
    ``quantize``/``fp16``, and for ``quantize="int8-static"`` calibrated on ``calibration``) into
    the cache; that export needs torch, serving it does not."""
    if kind == "onnx":
        return _onnx_backend(model, device, fp16, quantize, quantize_encoders, threads, clips_per_call, calibration)
    if kind != "torch":
        raise ConfigurationError(f"unknown backend {kind!r}: use torch or onnx")
    TORCH.require("the torch backend (or use --backend onnx)")
    TRANSFORMERS.require("the torch backend (or use --backend onnx)")
    from soundsift.backends.torch import TorchBackend

    return TorchBackend(model, device=device, fp16=fp16)


def _onnx_backend(
    model: str,
    device: str,
    fp16: bool,
    quantize: str,
    quantize_encoders: tuple[str, ...],
    threads: int | None,
    clips_per_call: int | None,
    calibration: CalibrationSource | None,
) -> Backend:
    from soundsift.backends.onnx.format import exported_folder
    from soundsift.backends.onnx.runtime import OnnxBackend, execution_providers

    execution_providers(device, fp16)  # a device that cannot work is refused before any export
    fingerprint = calibration.fingerprint if quantize == "int8-static" and calibration else None
    folder = exported_folder(model, quantize, quantize_encoders, fp16, fingerprint)
    if folder is None:
        from soundsift.backends.onnx.export import export_to_cache

        if quantize == "int8-static" and calibration is None:
            raise ConfigurationError("quantize int8-static needs calibration audio to export with")

        folder = export_to_cache(model, quantize, quantize_encoders, fp16, calibration if fingerprint else None)
    return OnnxBackend(folder, model_id=model, device=device, threads=threads, fp16=fp16, clips_per_call=clips_per_call)
