"""Calibration audio for static int8 export (``--quantize int8-static``): the user's own folder of
recordings, or the example clips bundled with soundsift when none is given.

Activation ranges are calibrated on the clips as the model will see them (decoded, resampled,
through 16-bit integers as the reference does, log-mel), and one clip in five is held out so the
exporter can measure the quantized encoder against float32 on audio it did not calibrate on.
The texts the (dynamically quantized) text encoder is measured on are the bundled presets' labels
in the default prompt template.
"""

from __future__ import annotations

import hashlib
from functools import cached_property
from pathlib import Path

import numpy as np

from soundsift.backends.mel import MelSettings
from soundsift.backends.onnx.calibration import CalibrationSet
from soundsift.core.audio import load_audio
from soundsift.core.features import MelFeaturizer, int16_roundtrip
from soundsift.core.files import audio_files
from soundsift.core.settings import DEFAULT_TEMPLATE
from soundsift.errors import ConfigurationError, SoundsiftError
from soundsift.i18n.presets import PRESETS

BUNDLED_EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
# Calibration runs the float graph with every intermediate tensor as an output; beyond a few dozen
# clips the ranges barely move while the export's time grows with every clip.
MAX_CALIBRATION_FILES = 64
HOLD_OUT_EVERY = 5


class AudioCalibration:
    """The calibration files of one folder (or the bundled examples), decoded only when built."""

    def __init__(self, folder: str | None = None, *, max_files: int = MAX_CALIBRATION_FILES) -> None:
        self.folder = Path(folder).expanduser() if folder else BUNDLED_EXAMPLES
        if not self.folder.is_dir():
            raise ConfigurationError(f"calibration folder {self.folder} does not exist")
        files = audio_files(self.folder)
        if not files:
            raise ConfigurationError(f"calibration folder {self.folder} holds no audio files")
        step = max(1, len(files) / max_files)
        self.files = [Path(files[int(index * step)]) for index in range(min(len(files), max_files))]
        self.source = "bundled examples" if folder is None else str(self.folder.resolve())

    @cached_property
    def hashes(self) -> list[str]:
        return [_sha256(path) for path in self.files]

    @property
    def fingerprint(self) -> str:
        """The files' contents (not their names or where they are), as part of the export cache key."""
        return hashlib.sha256("".join(sorted(self.hashes)).encode()).hexdigest()[:16]

    def held_out(self, index: int) -> bool:
        """Every fifth file is held out for measuring, when there are at least two."""
        count = len(self.files)
        if count < 2:
            return False
        if count < HOLD_OUT_EVERY:
            return index == count - 1
        return index % HOLD_OUT_EVERY == HOLD_OUT_EVERY - 1

    def build(self, mel: MelSettings) -> CalibrationSet:
        featurizer = MelFeaturizer(mel)
        clips: list[tuple[np.ndarray, bool]] = []
        held_out: list[tuple[np.ndarray, bool]] = []
        files: list[dict[str, object]] = []
        skipped: list[dict[str, str]] = []
        for index, (path, digest) in enumerate(zip(self.files, self.hashes)):
            try:
                samples = int16_roundtrip(load_audio(str(path), mel.sampling_rate).samples)
            except SoundsiftError as error:
                skipped.append({"file": path.name, "error": str(error)})
                continue
            features, is_longer = featurizer.clip_features(samples)
            (held_out if self.held_out(index) else clips).append((features, is_longer))
            files.append(
                {"file": str(path.relative_to(self.folder)), "sha256": digest, "held_out": self.held_out(index)}
            )
        if not clips:
            raise ConfigurationError(f"no calibration file in {self.folder} could be decoded")
        texts = [DEFAULT_TEMPLATE.format(label.strip()) for labels in PRESETS.values() for label in labels.split(",")]
        texts = sorted(set(texts))
        record = {
            "source": self.source,
            "count": len(clips),
            "held_out_count": len(held_out),
            "fingerprint": self.fingerprint,
            "files": files,
            "skipped": skipped,
        }
        return CalibrationSet(
            clips=clips,
            held_out=held_out,
            texts=texts,
            record=record,
        )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
