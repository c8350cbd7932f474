"""Finding audio files: extensions soundsift reads, the one folder walk, and folders or glob patterns
expanded into files."""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

AUDIO_EXTENSIONS = frozenset(
    {
        *(".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".m4a", ".aac", ".webm"),
        *(".mp4", ".m4v", ".mkv", ".mov", ".aif", ".aiff", ".wma", ".caf", ".3gp"),
    }
)


def is_audio_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in AUDIO_EXTENSIONS


@dataclass
class FolderWalk:
    """What one walk of a folder saw: its audio files, the entries of every folder it could list,
    and the folders it could not (with why). Symbolic links to folders are not followed."""

    root: str
    files: list[str] = field(default_factory=list)
    listed: dict[str, frozenset[str]] = field(default_factory=dict)
    unreadable: dict[str, str] = field(default_factory=dict)

    def proves_gone(self, path: str) -> bool:
        """True only on positive proof that ``path`` (inside the root) no longer exists: the nearest
        folder on its way that was listed holds no entry leading to it. A path below a folder that
        could not be read is never proven gone."""
        parent, child = os.path.split(path)
        while True:
            names = self.listed.get(parent)
            if names is not None:
                return child not in names
            if parent == self.root or os.path.dirname(parent) == parent:
                return False
            parent, child = os.path.split(parent)


def walk_folder(folder: str | os.PathLike[str]) -> FolderWalk:
    """Every audio file under ``folder`` (recursively, sorted), recording which folders were listed
    and which could not be read, instead of silently treating an unreadable folder as empty."""
    walk = FolderWalk(root=os.fspath(folder))

    def unreadable(error: OSError) -> None:
        walk.unreadable[str(error.filename or walk.root)] = error.strerror or str(error)

    for current, folders, names in os.walk(walk.root, onerror=unreadable):
        folders.sort()
        walk.listed[current] = frozenset(folders) | frozenset(names)
        paths = (os.path.join(current, name) for name in names if is_audio_name(name))
        walk.files.extend(path for path in paths if os.path.isfile(path))
    walk.files.sort()
    return walk


def audio_files(folder: str | os.PathLike[str]) -> list[str]:
    """The audio files under ``folder``, recursively and sorted."""
    return walk_folder(folder).files


def discover_inputs(inputs: Sequence[str]) -> list[str]:
    """Files as given, folders searched recursively for audio extensions, and glob patterns; no duplicates."""
    found: dict[str, None] = {}
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            candidates = audio_files(path)
        elif glob.has_magic(item):
            candidates = []
            for match in sorted(glob.glob(item, recursive=True)):
                if os.path.isdir(match):
                    candidates.extend(audio_files(match))
                elif is_audio_name(match):
                    candidates.append(match)
        else:
            candidates = [item]
        found.update((str(candidate), None) for candidate in candidates)
    return list(found)
