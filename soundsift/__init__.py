"""soundsift: zero-shot audio classification with CLAP."""

from soundsift.classifier import Classifier
from soundsift.config import ModelSettings, ServerSettings
from soundsift.errors import (
    AudioDecodeError,
    AudioError,
    AudioTooLargeError,
    AudioTooLongError,
    AudioTooShortError,
    ConfigurationError,
    EmptyAudioError,
    InvalidTextError,
    LabelError,
    MissingDependencyError,
    ModelLoadError,
    NonFiniteAudioError,
    ProcessingError,
    SoundsiftError,
)
from soundsift.results import Classification, Detection, FailedInput, LabelScore, SoundEvent
from soundsift.scoring import PreparedLabels
from soundsift.segmentation import detect

__version__ = "0.1.0"

__all__ = [
    "AudioDecodeError",
    "AudioError",
    "AudioTooLargeError",
    "AudioTooLongError",
    "AudioTooShortError",
    "Classification",
    "Classifier",
    "ConfigurationError",
    "Detection",
    "EmptyAudioError",
    "FailedInput",
    "InvalidTextError",
    "LabelError",
    "LabelScore",
    "MissingDependencyError",
    "ModelLoadError",
    "ModelSettings",
    "NonFiniteAudioError",
    "PreparedLabels",
    "ProcessingError",
    "ServerSettings",
    "SoundEvent",
    "SoundsiftError",
    "__version__",
    "detect",
]
