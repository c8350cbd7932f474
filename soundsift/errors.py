"""Typed errors, and the one table of what each means to a client.

Every error a user can cause is a SoundsiftError with a message that names the input. Each class
carries its stable ``code`` (HTTP error bodies, JSON output), its ``http_status`` (the server
answers it with that status) and its ``exit_code`` (the CLI exits with it): 1 when an input or the
machine failed, 2 for a usage error (bad flags, labels or files named). Subclasses inherit them.
"""

from __future__ import annotations

EXIT_FAILED, EXIT_USAGE = 1, 2


class SoundsiftError(Exception):
    """Base class of every error soundsift raises on purpose."""

    code = "soundsift_error"
    http_status = 422
    exit_code = EXIT_FAILED
    retry_after_s: int | None = None
    """Set on errors a client should retry: the server sends it as Retry-After."""

    def __init__(self, message: str, *, source: str | None = None) -> None:
        self.source = source
        super().__init__(f"{source}: {message}" if source else message)


class AudioError(SoundsiftError):
    """Something is wrong with an audio input."""

    code = "invalid_audio"


class AudioDecodeError(AudioError):
    """The input is not audio we can decode: corrupt, truncated, not audio, or no audio track."""

    code = "audio_decode_error"
    http_status = 415


class EmptyAudioError(AudioError):
    """The input holds no audio at all (empty file, zero samples)."""

    code = "empty_audio"


class AudioTooShortError(AudioError):
    """The audio is shorter than the configured minimum (e.g. no samples left after resampling)."""

    code = "audio_too_short"


class AudioTooLargeError(AudioError):
    """Decoding the input would produce more audio data than the configured budget (channels x rate x time)."""

    code = "audio_too_large"


class AudioTooLongError(AudioError):
    """The audio is longer than the configured maximum duration."""

    code = "audio_too_long"


class NonFiniteAudioError(AudioError):
    """The samples contain NaN or infinity."""

    code = "non_finite_audio"


class LabelError(SoundsiftError):
    """The label set is unusable: too few, too many, duplicated, too long, or a bad template."""

    code = "invalid_labels"
    exit_code = EXIT_USAGE


class OptionsError(SoundsiftError):
    """A scoring or detection option out of its range (a threshold above 1, a negative margin, ...)."""

    code = "invalid_options"
    exit_code = EXIT_USAGE


class UnknownModelError(OptionsError):
    """A request names a model the server does not serve."""

    code = "model_not_found"
    http_status = 404


class InvalidTextError(LabelError):
    """Text that cannot be used honestly: invalid UTF-8, lone surrogates, NUL or other control characters."""

    code = "invalid_text"


class ModelLoadError(SoundsiftError):
    """The model (weights, config or processor) could not be loaded."""

    code = "model_unavailable"
    http_status = 503


class ProcessingError(SoundsiftError):
    """The model failed on one input that passed every check (a bug or a resource problem, logged)."""

    code = "processing_failed"
    http_status = 500


class ConfigurationError(SoundsiftError):
    """A setting has a value that cannot work on this machine (e.g. cuda without a GPU)."""

    code = "invalid_configuration"


class MissingDependencyError(ConfigurationError):
    """An optional package is needed for what was asked; the message names the extra to install."""

    code = "missing_dependency"
    http_status = 500


class AdapterError(SoundsiftError):
    """An adapter file cannot be used: unreadable, truncated, not an adapter, or inconsistent."""

    code = "invalid_adapter"
    exit_code = EXIT_USAGE


class AdapterMismatchError(AdapterError):
    """An adapter taught on another model (or a backend whose embeddings differ) was refused."""

    code = "adapter_mismatch"
    http_status = 409


class ExamplesError(SoundsiftError):
    """Teaching examples cannot be used: no clips, a label with no usable clip, or a bad list."""

    code = "invalid_examples"
    exit_code = EXIT_USAGE


class QueueFullError(SoundsiftError):
    """The model's queue is full; retry shortly."""

    code = "overloaded"
    http_status = 503
    retry_after_s = 1


class ServiceStoppingError(QueueFullError):
    """The service is shutting down; the work was not started. Retry on another replica."""

    code = "shutting_down"


class UsageError(SoundsiftError):
    """Bad flags, or files or values named that cannot be used as asked."""

    code = "invalid_usage"
    exit_code = EXIT_USAGE


class ClientGoneError(SoundsiftError):
    """The client disconnected; the work for it was stopped."""

    code = "client_closed_request"
    http_status = 499
