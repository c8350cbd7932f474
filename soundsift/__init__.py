"""soundsift: zero-shot audio classification with CLAP."""

from soundsift.classifier import Classifier, PreparedLabels
from soundsift.config import Settings
from soundsift.errors import (
    AudioDecodeError,
    AudioError,
    AudioTooLongError,
    ConfigurationError,
    EmptyAudioError,
    LabelError,
    ModelLoadError,
    NonFiniteAudioError,
    SoundsiftError,
)
from soundsift.results import Classification, FailedInput, LabelScore

__version__ = "0.1.0"

__all__ = [
    "AudioDecodeError",
    "AudioError",
    "AudioTooLongError",
    "Classification",
    "Classifier",
    "ConfigurationError",
    "EmptyAudioError",
    "FailedInput",
    "LabelError",
    "LabelScore",
    "ModelLoadError",
    "NonFiniteAudioError",
    "PreparedLabels",
    "Settings",
    "SoundsiftError",
    "__version__",
]
