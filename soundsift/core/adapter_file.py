"""The adapter file's container: safetensors arrays plus JSON metadata in the header, no pickle.
The metadata is read bounded in size and nesting before it is parsed (an adapter file may come
from anyone: an upload, a download)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from soundsift.core.text import load_bounded_json

FORMAT = "soundsift-adapter"
FORMAT_VERSION = 1
# An adapter's metadata holds labels, prompts, clip hashes and skipped clips: a few MB at the most
# for the largest teaching the server allows; nothing in it is nested more than four levels.
MAX_METADATA_CHARS = 16 * 1024 * 1024
MAX_METADATA_DEPTH = 16


def encode(tensors: dict[str, np.ndarray], metadata: dict[str, Any]) -> bytes:
    from safetensors.numpy import save

    return save(tensors, metadata={FORMAT: json.dumps(metadata, ensure_ascii=False)})


def decode(data: bytes) -> tuple[dict[str, np.ndarray], Any]:
    """The arrays and the metadata; ValueError (or safetensors' own error) for anything else."""
    from safetensors.numpy import load

    tensors = load(data)
    metadata = load_bounded_json(
        _header_metadata(data).get(FORMAT, "null"), max_chars=MAX_METADATA_CHARS, max_depth=MAX_METADATA_DEPTH
    )
    return tensors, metadata


def _header_metadata(data: bytes) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors header (8-byte little-endian length, then JSON)."""
    if len(data) < 8:
        raise ValueError("file too short")
    length = int.from_bytes(data[:8], "little")
    if length > len(data) - 8:
        raise ValueError("header longer than the file")
    text = data[8 : 8 + length].decode("utf-8")
    header = load_bounded_json(text, max_chars=MAX_METADATA_CHARS, max_depth=MAX_METADATA_DEPTH)
    metadata = header.get("__metadata__", {}) if isinstance(header, dict) else {}
    if not isinstance(metadata, dict):
        raise ValueError("__metadata__ is not an object")
    return {str(key): str(value) for key, value in metadata.items()}
