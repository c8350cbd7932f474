"""soundsift: zero-shot audio classification with CLAP."""

from soundsift._version import __version__
from soundsift.core.adapter import Adapter
from soundsift.core.classifier import Classifier
from soundsift.core.ensemble import Ensemble
from soundsift.core.results import Classification, FailedInput, LabelScore, MemberAnswer
from soundsift.core.scoring import PreparedLabels
from soundsift.core.settings import ModelSettings
from soundsift.detection.results import Detection, SoundEvent
from soundsift.detection.windows import detect
from soundsift.errors import (
    AdapterError,
    AdapterMismatchError,
    AudioDecodeError,
    AudioError,
    AudioTooLargeError,
    AudioTooLongError,
    AudioTooShortError,
    ConfigurationError,
    EmptyAudioError,
    ExamplesError,
    InvalidTextError,
    LabelError,
    MissingDependencyError,
    ModelLoadError,
    NonFiniteAudioError,
    ProcessingError,
    SoundsiftError,
    UnknownModelError,
)
from soundsift.search.library import Library
from soundsift.serving.settings import ServerSettings

__all__ = [
    "Adapter",
    "AdapterError",
    "AdapterMismatchError",
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
    "Ensemble",
    "ExamplesError",
    "FailedInput",
    "InvalidTextError",
    "LabelError",
    "LabelScore",
    "Library",
    "MemberAnswer",
    "MissingDependencyError",
    "ModelLoadError",
    "ModelSettings",
    "NonFiniteAudioError",
    "PreparedLabels",
    "ProcessingError",
    "ServerSettings",
    "SoundEvent",
    "SoundsiftError",
    "UnknownModelError",
    "__version__",
    "detect",
]
