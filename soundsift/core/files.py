"""Finding audio files: extensions soundsift reads, and folders or glob patterns expanded into files."""

from __future__ import annotations

import glob
from collections.abc import Sequence
from pathlib import Path

AUDIO_EXTENSIONS = frozenset(
    {
        *(".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".m4a", ".aac", ".webm"),
        *(".mp4", ".m4v", ".mkv", ".mov", ".aif", ".aiff", ".wma", ".caf", ".3gp"),
    }
)


def discover_inputs(inputs: Sequence[str]) -> list[str]:
    """Files as given, folders searched recursively for audio extensions, and glob patterns; no duplicates."""
    found: dict[str, None] = {}
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            candidates = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)
        elif glob.has_magic(item):
            candidates = []
            for match in sorted(glob.glob(item, recursive=True)):
                match_path = Path(match)
                if match_path.is_dir():
                    candidates.extend(Path(found) for found in discover_inputs([match]))
                elif match_path.suffix.lower() in AUDIO_EXTENSIONS:
                    candidates.append(match_path)
        else:
            candidates = [path]
        found.update((str(candidate), None) for candidate in candidates)
    return list(found)
