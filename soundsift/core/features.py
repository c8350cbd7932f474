"""CLAP log-mel features in plain numpy, deterministic.

Numerically the same as transformers' ``ClapFeatureExtractor`` (within 1e-4 dB), with two changes
that make a clip's embedding depend on the clip alone:

- clips longer than the window are fused from three crops at fixed positions (start, middle,
  end) instead of random ones;
- ``is_longer`` is true only for clips that really are longer than the window; transformers marks a
  random short clip as longer when none in the batch is, so scores depend on chance and neighbours.

No torch here, so the ONNX serving path can use it too.
"""

from __future__ import annotations

from functools import cached_property

import numpy as np

from soundsift.backends.mel import MelSettings
from soundsift.errors import EmptyAudioError

_MEL_FLOOR = 1e-10
# STFT frames are processed in blocks small enough (1 MB of float64 frames) for the temporaries to
# stay in cache and be reused by the allocator: with whole-clip blocks, page faults on fresh 8 MB
# arrays took half the time (14 -> 8 ms per 10 s clip, measured on 2 cores).
_FRAMES_PER_BLOCK = 128


class MelFeaturizer:
    """Turns 1-D float waveforms at ``settings.sampling_rate`` into CLAP model inputs."""

    def __init__(self, settings: MelSettings) -> None:
        self.settings = settings

    @cached_property
    def _window(self) -> np.ndarray:
        return np.hanning(self.settings.n_fft + 1)[:-1]

    @cached_property
    def _filters(self) -> np.ndarray:
        scale = "htk" if self.settings.fusion else "slaney"
        return mel_filter_bank(self.settings, mel_scale=scale, slaney_norm=not self.settings.fusion)

    @cached_property
    def _sparse_filters(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(bins, weights, start of each mel's run) of the nonzero filter weights, mel by mel."""
        mels, bins = np.nonzero(self._filters.T)
        starts = np.searchsorted(mels, np.arange(self._filters.shape[1]))
        return bins, self._filters.T[mels, bins], starts

    def __call__(self, waveforms: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(input_features, is_longer)``: (B, C, frames, mels) float32 and (B, 1) bool.

        C is 4 for fused checkpoints (global view + three crops) and 1 otherwise.
        """
        pairs = [self.clip_features(_as_float(waveform)) for waveform in waveforms]
        features = np.stack([mel for mel, _ in pairs]).astype(np.float32, copy=False)
        is_longer = np.array([[longer] for _, longer in pairs], dtype=bool)
        return features, is_longer

    def clip_features(self, waveform: np.ndarray) -> tuple[np.ndarray, bool]:
        """(C, frames, mels) features of one clip and whether it is longer than the model's window."""
        settings = self.settings
        if len(waveform) == 0:
            raise EmptyAudioError("the audio has no samples")
        if len(waveform) > settings.max_samples:
            return self._long_clip(waveform)
        mel = self.log_mel(waveform, length=settings.max_samples)
        return (np.stack([mel] * 4) if settings.fusion else mel[None]), False

    def _long_clip(self, waveform: np.ndarray) -> tuple[np.ndarray, bool]:
        settings = self.settings
        if not settings.fusion:
            start = (len(waveform) - settings.max_samples) // 2
            return self.log_mel(waveform[start : start + settings.max_samples])[None], True
        mel = self.log_mel(waveform)
        chunk = settings.chunk_frames
        total = mel.shape[0]
        if total == chunk:
            return np.stack([mel] * 4), False
        last = total - chunk
        crops = [mel[start : start + chunk] for start in (0, last // 2, last)]
        shrunk = bilinear_resize_rows(mel, chunk)
        return np.stack([shrunk, *crops]), True

    def log_mel(self, waveform: np.ndarray, length: int | None = None) -> np.ndarray:
        """(frames, n_mels) power log-mel in dB of a centred, reflect-padded Hann STFT.

        With ``length``, the waveform is first padded to that many samples as the checkpoint's
        ``padding`` says (repeat, repeatpad or zeros).
        """
        padded = self._centred(waveform, length or len(waveform))
        frames = np.lib.stride_tricks.sliding_window_view(padded, self.settings.n_fft)[:: self.settings.hop_length]
        mel = np.empty((len(frames), self.settings.n_mels), dtype=np.float32)
        for start in range(0, len(frames), _FRAMES_PER_BLOCK):
            mel[start : start + _FRAMES_PER_BLOCK] = self._mel_block(frames[start : start + _FRAMES_PER_BLOCK])
        return mel

    def _centred(self, waveform: np.ndarray, length: int) -> np.ndarray:
        """The waveform padded to ``length`` and reflect-padded by n_fft/2 on each side, built in one
        array: every extra multi-megabyte copy costs a millisecond or more in page faults."""
        half = self.settings.n_fft // 2
        padded = np.zeros(length + 2 * half, dtype=waveform.dtype)
        body = padded[half : half + length]
        copies = 1
        if len(waveform) < length and self.settings.padding in ("repeat", "repeatpad"):
            copies = length // len(waveform)
        filled = min(copies * len(waveform), length)
        body[:filled].reshape(copies, -1)[:] = waveform[: filled // copies]
        if self.settings.padding == "repeat":
            body[filled:] = waveform[: length - filled]
        if length <= half:
            return np.pad(body, half, mode="reflect")
        padded[:half] = body[half:0:-1]
        padded[half + length :] = body[-2 : -half - 2 : -1]
        return padded

    def _mel_block(self, frames: np.ndarray) -> np.ndarray:
        spectrum = np.fft.rfft(frames * self._window, axis=-1)
        parts = spectrum.view(np.float64)
        np.square(parts, out=parts)
        projected = self._project(parts[:, 0::2] + parts[:, 1::2])
        np.maximum(projected, _MEL_FLOOR, out=projected)
        np.log10(projected, out=projected)
        projected *= 10.0
        return projected

    def _project(self, power: np.ndarray) -> np.ndarray:
        """power @ filters without BLAS. The filters are ~97% zeros, and a BLAS call would wake
        OpenBLAS's thread pool, whose spinning threads then halve the speed of the model that runs
        next on a small machine (measured: ONNX audio encoder 47 -> 100 ms on 2 cores)."""
        bins, weights, starts = self._sparse_filters
        if np.any(np.diff(np.append(starts, len(bins))) == 0):
            return power @ self._filters
        return np.add.reduceat(power[:, bins] * weights, starts, axis=1)


def _as_float(waveform: np.ndarray) -> np.ndarray:
    """float64 stays float64 (as transformers computes); anything else becomes float32, which
    float64 arithmetic then reads exactly, without a second full-length copy."""
    waveform = np.asarray(waveform)
    return waveform if waveform.dtype == np.float64 else waveform.astype(np.float32, copy=False)


def bilinear_resize_rows(matrix: np.ndarray, rows: int) -> np.ndarray:
    """Resize the first axis to ``rows`` like torch's bilinear interpolate with align_corners=False."""
    # float32 index arithmetic, as torch's CPU kernel does, so the weights match bit for bit.
    source_rows = matrix.shape[0]
    scale = np.float32(source_rows / rows)
    position = np.maximum((np.arange(rows, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5), 0)
    lower = np.minimum(position.astype(np.int64), source_rows - 1)
    upper = np.minimum(lower + 1, source_rows - 1)
    weight = (position - lower.astype(np.float32))[:, None]
    return ((np.float32(1.0) - weight) * matrix[lower] + weight * matrix[upper]).astype(matrix.dtype)


def mel_filter_bank(settings: MelSettings, *, mel_scale: str, slaney_norm: bool) -> np.ndarray:
    """(n_fft//2+1, n_mels) triangular filters, as torchaudio (htk) or librosa (slaney) build them."""
    bins = settings.n_fft // 2 + 1
    mel_points = np.linspace(
        _hz_to_mel(settings.f_min, mel_scale), _hz_to_mel(settings.f_max, mel_scale), settings.n_mels + 2
    )
    filter_hz = _mel_to_hz(mel_points, mel_scale)
    fft_hz = np.linspace(0, settings.sampling_rate // 2, bins)
    slopes = filter_hz[None, :] - fft_hz[:, None]
    spacing = np.diff(filter_hz)
    down = -slopes[:, :-2] / spacing[:-1]
    up = slopes[:, 2:] / spacing[1:]
    filters = np.maximum(0.0, np.minimum(down, up))
    if slaney_norm:
        filters *= 2.0 / (filter_hz[2:] - filter_hz[:-2])[None, :]
    return filters


def _hz_to_mel(hz: float, scale: str) -> float:
    if scale == "htk":
        return 2595.0 * np.log10(1.0 + hz / 700.0)
    if hz < 1000.0:
        return 3.0 * hz / 200.0
    return 15.0 + np.log(hz / 1000.0) * 27.0 / np.log(6.4)


def _mel_to_hz(mels: np.ndarray, scale: str) -> np.ndarray:
    if scale == "htk":
        return 700.0 * (np.power(10.0, mels / 2595.0) - 1.0)
    hz = 200.0 * mels / 3.0
    log_region = mels >= 15.0
    hz[log_region] = 1000.0 * np.exp(np.log(6.4) / 27.0 * (mels[log_region] - 15.0))
    return hz


INT16_SCALE = 32767.0


def int16_roundtrip(waveform: np.ndarray) -> np.ndarray:
    """The samples as laion_clap feeds them to the features (``float32_to_int16`` then
    ``int16_to_float32`` in its training/data.py): clipped to [-1, 1] and rounded down to the
    16-bit grid, so peaks above 1 after resampling are clipped and sound below 1/32767 is silence."""
    quantized = (np.clip(waveform, -1.0, 1.0) * INT16_SCALE).astype(np.int16)
    return (quantized / INT16_SCALE).astype(np.float32)  # divided in float64, then cast: as the reference
