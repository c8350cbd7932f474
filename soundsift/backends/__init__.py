"""Model backends: each turns mel features and texts into L2-normalised CLAP embeddings."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from soundsift.features import MelSettings


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


def load_backend(name: str, model: str, device: str, fp16: bool) -> Backend:
    if name == "torch":
        from soundsift.backends.torch_backend import TorchBackend

        return TorchBackend(model, device=device, fp16=fp16)
    raise ValueError(f"unknown backend {name!r}")
