"""Model backends: each turns mel features and texts into L2-normalised CLAP embeddings."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from soundsift.core.features import MelSettings
from soundsift.core.settings import ModelSettings
from soundsift.errors import ModelLoadError


class Backend(Protocol):
    """What the classifier needs from a model runtime."""

    model_id: str
    device: str
    mel_settings: MelSettings
    logit_scale: float

    def embed_audio(self, features: np.ndarray, is_longer: np.ndarray) -> np.ndarray:
        """(B, C, T, F) features and (B, 1) is_longer -> (B, D) unit vectors."""
        ...

    def embed_text(self, texts: list[str]) -> np.ndarray:
        """N texts -> (N, D) unit vectors."""
        ...


def load_backend(settings: ModelSettings) -> Backend:
    """The backend named by settings.backend; each imports its runtime only when chosen."""
    if settings.backend == "onnx":
        from soundsift.backends.onnx.runtime import OnnxBackend

        return OnnxBackend(
            settings.model,
            device=settings.device,
            quantize=settings.quantize,
            quantize_encoders=tuple(settings.quantize_encoders),
            threads=settings.threads,
            fp16=settings.fp16,
        )
    try:
        from soundsift.backends.torch import TorchBackend
    except ImportError as error:
        raise ModelLoadError(
            f"the torch backend needs PyTorch and transformers ({error}): pip install 'soundsift[torch]', "
            "or use --backend onnx"
        ) from None
    return TorchBackend(settings.model, device=settings.device, fp16=settings.fp16)
