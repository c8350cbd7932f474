"""Typed errors. Every error a user can cause is a SoundsiftError with a message that names the input."""

from __future__ import annotations


class SoundsiftError(Exception):
    """Base class of every error soundsift raises on purpose.

    ``code`` is a stable machine-readable name (used in HTTP error bodies and JSON output).
    """

    code = "soundsift_error"

    def __init__(self, message: str, *, source: str | None = None) -> None:
        self.source = source
        super().__init__(f"{source}: {message}" if source else message)


class AudioError(SoundsiftError):
    """Something is wrong with an audio input."""

    code = "invalid_audio"


class AudioDecodeError(AudioError):
    """The input is not audio we can decode: corrupt, truncated, not audio, or no audio track."""

    code = "audio_decode_error"


class EmptyAudioError(AudioError):
    """The input holds no audio at all (empty file, zero samples)."""

    code = "empty_audio"


class AudioTooLongError(AudioError):
    """The audio is longer than the configured maximum duration."""

    code = "audio_too_long"


class NonFiniteAudioError(AudioError):
    """The samples contain NaN or infinity."""

    code = "non_finite_audio"


class LabelError(SoundsiftError):
    """The label set is unusable: too few, too many, duplicated, too long, or a bad template."""

    code = "invalid_labels"


class ModelLoadError(SoundsiftError):
    """The model (weights, config or processor) could not be loaded."""

    code = "model_unavailable"


class ConfigurationError(SoundsiftError):
    """A setting has a value that cannot work on this machine (e.g. cuda without a GPU)."""

    code = "invalid_configuration"
