"""A model's embedding fingerprint: its embeddings of fixed probe sounds and a probe text.

Adapters and search indexes record the fingerprint of the model they were made with and refuse a
model whose fingerprint differs, because vectors of two models cannot be compared. The same
checkpoint on another backend (ONNX, fp16) agrees to ~0.999; another checkpoint does not.
"""

from __future__ import annotations

import numpy as np

AGREEMENT = 0.98
"""Least cosine similarity, probe by probe, between two fingerprints of the same model."""
PROBE_TEXT = "a short test sound"


def probe_signals(sample_rate: int) -> list[np.ndarray]:
    """Fixed sounds whose embeddings fingerprint a model: a tone chord, seeded noise and a chirp (2 s)."""
    time = np.arange(2 * sample_rate) / sample_rate
    chord = sum(np.sin(2 * np.pi * frequency * time) for frequency in (220.0, 554.4, 1318.5)) / 3
    noise = np.random.default_rng(20251125).standard_normal(len(time)) * 0.3
    chirp = np.sin(2 * np.pi * (100 * time + 2000 * time**2))
    return [np.asarray(signal * 0.5, dtype=np.float32) for signal in (chord, noise, chirp)]


def rowwise_cosine(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Cosine similarity of each row of ``left`` with the same row of ``right``."""
    left, right = np.asarray(left, dtype=np.float64), np.asarray(right, dtype=np.float64)
    norms = np.linalg.norm(left, axis=-1) * np.linalg.norm(right, axis=-1) + 1e-12
    return np.asarray((left * right).sum(axis=-1) / norms)


def agreement(stored: np.ndarray, current: np.ndarray) -> float:
    """The least probe-by-probe cosine of two fingerprints; NaN when their shapes differ."""
    stored, current = np.asarray(stored), np.asarray(current)
    if stored.shape != current.shape:
        return float("nan")
    return float(rowwise_cosine(stored, current).min())


def same_model(stored: np.ndarray, current: np.ndarray) -> bool:
    """Whether two fingerprints come from models whose embeddings can be compared."""
    return agreement(stored, current) >= AGREEMENT
