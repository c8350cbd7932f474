"""What static int8 quantization calibrates on: model inputs (mel features, label texts) and the record
of where they came from, which the exporter writes into the exported folder's manifest.

The exporter cannot decode audio itself (the backends sit below soundsift.core, which decodes and
computes the features), so the caller hands it a `CalibrationSource`: soundsift.core.calibration's
`AudioCalibration` reads a folder of the user's audio, or the bundled example clips. Imports
neither torch nor onnxruntime.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from soundsift.backends.mel import MelSettings

CALIBRATION_METHODS = ("minmax", "percentile", "entropy")
# Static int8 can keep in float the readers of the activations that quantization hurts most,
# measured at export (soundsift.backends.onnx.export._most_sensitive). Off by default: on the
# full-size model the rule alone reached a held-out cosine to fp32 of 0.99986, and every Gemm
# kept in float costs about four times its int8 time.
KEEP_FLOAT = 0


@dataclass(frozen=True)
class CalibrationSet:
    """Model inputs to calibrate on, inputs held out to measure the result against float32, and
    label texts to measure the text encoder on.

    ``clips`` and ``held_out`` are (C, T, F) log-mel features with their is_longer flag, at the
    features' own frame count (the exporter stretches them to the model's, as the backend does)."""

    clips: list[tuple[np.ndarray, bool]]
    held_out: list[tuple[np.ndarray, bool]]
    texts: list[str]
    record: dict[str, Any] = field(default_factory=dict)


class CalibrationSource(Protocol):
    """Where calibration data comes from: a fingerprint (part of the first-use cache key, known
    before the checkpoint is loaded) and the data itself for a checkpoint's mel settings."""

    @property
    def fingerprint(self) -> str: ...

    def build(self, mel: MelSettings) -> CalibrationSet: ...
