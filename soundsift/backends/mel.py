"""The log-mel front end a CLAP checkpoint expects, as its backend reports it (the preprocessor config
of a transformers checkpoint, or the manifest of an ONNX export). soundsift.core.features computes
the features from it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class MelSettings:
    """The feature extractor parameters of a CLAP checkpoint (its preprocessor config)."""

    sampling_rate: int = 48_000
    n_fft: int = 1024
    hop_length: int = 480
    n_mels: int = 64
    f_min: float = 50.0
    f_max: float = 14_000.0
    max_length_s: float = 10.0
    fusion: bool = True
    padding: str = "repeatpad"

    @classmethod
    def from_extractor_config(cls, config: dict[str, Any], *, fusion: bool) -> MelSettings:
        """Build from a ``preprocessor_config.json``-style dict; ``fusion`` comes from the model config."""
        return cls(
            sampling_rate=int(config.get("sampling_rate", 48_000)),
            n_fft=int(config.get("fft_window_size", 1024)),
            hop_length=int(config.get("hop_length", 480)),
            n_mels=int(config.get("feature_size", 64)),
            f_min=float(config.get("frequency_min", 50.0)),
            f_max=float(config.get("frequency_max", 14_000.0)),
            max_length_s=float(config.get("max_length_s", 10.0)),
            fusion=fusion,
            padding=str(config.get("padding", "repeatpad")),
        )

    @property
    def max_samples(self) -> int:
        return int(self.max_length_s * self.sampling_rate)

    @property
    def chunk_frames(self) -> int:
        return self.max_samples // self.hop_length + 1
