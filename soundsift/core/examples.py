"""Teaching examples: which clips teach which label, from a folder of label folders, a
``path,label`` CSV or a mapping, and the content hash that lets re-teaching skip clips already
embedded. (The folder walk itself is soundsift.core.files'.)"""

from __future__ import annotations

import csv
import hashlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from soundsift.core.audio import AudioInput
from soundsift.core.files import audio_files
from soundsift.errors import ExamplesError

NEGATIVE_LABEL = "_none"
"""The folder (or CSV label) of 'none of these' recordings."""
MAX_EXAMPLE_LIST_BYTES = 10 * 1024 * 1024

ExamplesInput = str | os.PathLike[str] | Mapping[str, Sequence[AudioInput]]
"""A folder (one sub-folder per label), a CSV file of ``path,label``, or ``{label: [clips]}``."""


@dataclass(frozen=True)
class ExampleFiles:
    """Clips per label, and the negative clips, as found in a folder, a CSV or a mapping."""

    by_label: dict[str, list[AudioInput]]
    negatives: list[AudioInput]


def read_examples(examples: ExamplesInput) -> ExampleFiles:
    """Clips per label from a folder of label folders, a ``path,label`` CSV, or a mapping."""
    if isinstance(examples, Mapping):
        by_label = {str(label).strip(): list(clips) for label, clips in examples.items()}
        negatives = by_label.pop(NEGATIVE_LABEL, [])
        return _checked(ExampleFiles(by_label, negatives), "the examples")
    path = Path(examples)
    if path.is_dir():
        return _checked(_from_folder(path), str(path))
    if path.is_file():
        return _checked(_from_csv(path), str(path))
    raise ExamplesError(f"{path}: no such folder or CSV file")


def read_negatives(negatives: str | os.PathLike[str] | Sequence[AudioInput]) -> list[AudioInput]:
    if isinstance(negatives, (str, os.PathLike)):
        folder = Path(negatives)
        if not folder.is_dir():
            raise ExamplesError(f"{folder}: the negatives must be a folder of recordings")
        return list(audio_files(folder))
    return list(negatives)


def _from_folder(folder: Path) -> ExampleFiles:
    by_label: dict[str, list[AudioInput]] = {}
    negatives: list[AudioInput] = []
    for child in sorted(folder.iterdir()):
        if not child.is_dir() or child.name.startswith("."):
            continue
        clips: list[AudioInput] = list(audio_files(child))
        if child.name == NEGATIVE_LABEL:
            negatives.extend(clips)
        else:
            by_label[child.name] = clips
    return ExampleFiles(by_label, negatives)


def _from_csv(path: Path) -> ExampleFiles:
    if path.stat().st_size > MAX_EXAMPLE_LIST_BYTES:
        raise ExamplesError(f"{path}: the example list is larger than {MAX_EXAMPLE_LIST_BYTES // 2**20} MB")
    by_label: dict[str, list[AudioInput]] = {}
    negatives: list[AudioInput] = []
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            for number, row in enumerate(csv.reader(handle), start=1):
                if not row or (number == 1 and [cell.strip().lower() for cell in row[:2]] == ["path", "label"]):
                    continue
                if len(row) < 2 or not row[0].strip() or not row[1].strip():
                    raise ExamplesError(f"{path}:{number}: expected 'path,label'")
                clip, label = (path.parent / row[0].strip()), row[1].strip()
                (negatives if label == NEGATIVE_LABEL else by_label.setdefault(label, [])).append(str(clip))
    except UnicodeDecodeError:
        raise ExamplesError(f"{path}: the example list is not UTF-8 text") from None
    except csv.Error as error:
        raise ExamplesError(f"{path}: not a readable CSV ({error})") from None
    return ExampleFiles(by_label, negatives)


def _checked(found: ExampleFiles, where: str) -> ExampleFiles:
    if not found.by_label:
        raise ExamplesError(f"{where}: no labels found (expected one folder per label, or a 'path,label' CSV)")
    empty = [label for label, clips in found.by_label.items() if not clips]
    if empty:
        raise ExamplesError(f"{where}: no audio clips for label(s) {', '.join(empty)}")
    if any(not label for label in found.by_label):
        raise ExamplesError(f"{where}: a label is empty")
    return found


def content_hash(clip: AudioInput) -> str:
    """sha256 of a file's bytes or an array's samples; '' for inputs that cannot be re-read."""
    digest = hashlib.sha256()
    if isinstance(clip, (str, os.PathLike)):
        try:
            with open(clip, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
        except OSError:
            return ""
    elif isinstance(clip, (bytes, bytearray)):
        digest.update(clip)
    elif isinstance(clip, tuple) and len(clip) == 2 and isinstance(clip[0], np.ndarray):
        digest.update(f"{clip[1]}:{clip[0].shape}:{clip[0].dtype}".encode())
        digest.update(np.ascontiguousarray(clip[0]).tobytes())
    else:
        return ""
    return digest.hexdigest()


def describe_clip(clip: AudioInput) -> str:
    return os.fspath(clip) if isinstance(clip, (str, os.PathLike)) else "<clip>"
