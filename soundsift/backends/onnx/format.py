"""The exported-folder format shared by the exporter and the runtime: file names, the manifest, and
where first-use exports are cached. Imports neither torch nor onnxruntime."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
AUDIO_GRAPH = "audio.onnx"
TEXT_GRAPH = "text.onnx"
OPSET = 17
# Bumped when the exported graphs change, so that first-use exports cached by an older soundsift are
# made again rather than reused.
FORMAT = "soundsift-onnx/3"


def read_manifest(folder: Path) -> dict[str, Any]:
    return dict(json.loads((folder / MANIFEST).read_text()))


def is_exported(folder: Path) -> bool:
    return (folder / MANIFEST).is_file()


def exported_folder(
    model: str, quantize: str, quantize_encoders: tuple[str, ...], fp16: bool = False, calibration: str | None = None
) -> Path | None:
    """``model`` itself when it is an exported folder, else its cached first-use export if that exists."""
    local = Path(model).expanduser()
    if is_exported(local):
        return local
    cached = cache_folder(model, quantize, quantize_encoders, fp16, calibration)
    return cached if is_exported(cached) else None


def cache_folder(
    model: str, quantize: str, quantize_encoders: tuple[str, ...], fp16: bool = False, calibration: str | None = None
) -> Path:
    """Where the on-first-use export of ``model`` with these options lives (keyed by revision and
    format, and for static int8 by the calibration files' fingerprint)."""
    root = Path(os.environ.get("SOUNDSIFT_CACHE", Path.home() / ".cache" / "soundsift")) / "onnx"
    local = Path(model).expanduser()
    identity = str(local.resolve()) if local.is_dir() else model
    revision = _local_fingerprint(local) if local.is_dir() else _hub_revision(model)
    parts: list[object] = [FORMAT, identity, revision, quantize, sorted(quantize_encoders), OPSET, fp16]
    if calibration is not None:  # appended only then, so the keys of earlier exports stay the same
        parts.append(calibration)
    key = json.dumps(parts)
    slug = "".join(c if c.isalnum() else "-" for c in identity)[-48:]
    return root / f"{slug}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"


def _hub_revision(model: str) -> str:
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(model, "config.json")
        return Path(cached).parent.name if isinstance(cached, str) else "unknown"
    except ImportError:
        return "unknown"


def _local_fingerprint(folder: Path) -> str:
    stats = sorted((p.name, p.stat().st_size, int(p.stat().st_mtime)) for p in folder.iterdir() if p.is_file())
    return hashlib.sha256(json.dumps(stats).encode()).hexdigest()[:16]
