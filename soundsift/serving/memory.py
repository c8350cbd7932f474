"""Will the models fit? Before loading anything, the server estimates what its models will take and
compares that with the memory the machine (or its container's cgroup) has available, so a server
asked for more than fits stops at once with a clear message instead of being killed mid-load.

The estimate is deliberately simple: the size of the weight files each CPU replica loads, times
``WORKING_MEMORY_FACTOR`` (the runtime's buffers and a batch's activations), plus
``PROCESS_BASE_MB`` for the Python runtime and its libraries. A model on a GPU counts against the
GPU, not here. A model whose files are not on this machine yet (a hub id to download) is left out
of the estimate, and the message says so.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from soundsift.core.settings import ModelSettings
from soundsift.errors import ConfigurationError

logger = logging.getLogger("soundsift")

WORKING_MEMORY_FACTOR = 1.5
PROCESS_BASE_MB = 300.0
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".onnx", ".data", ".pt")
INT8_SHRINK = 4  # an int8 export keeps a quarter of the fp32 weights' bytes
MB = 1024 * 1024


@dataclass(frozen=True)
class ModelFootprint:
    name: str
    replicas_on_cpu: int
    weights_mb: float | None
    """The weight files one replica loads, MB; None when they are not on this machine yet."""

    @property
    def estimate_mb(self) -> float:
        return (self.weights_mb or 0.0) * WORKING_MEMORY_FACTOR * self.replicas_on_cpu


def weights_mb(settings: ModelSettings) -> float | None:
    """MB of weights one replica of the settings' model loads: the files of a local folder, or of
    the hub id's snapshot in the local cache; an int8 export on first use is a quarter of them."""
    folder = _model_folder(settings.model)
    if folder is None:
        return None
    files = [path for path in folder.rglob("*") if path.is_file() and path.name.endswith(WEIGHT_SUFFIXES)]
    size = sum(path.stat().st_size for path in files) / MB
    exported = any(path.suffix == ".onnx" for path in files)
    if settings.backend == "onnx" and not exported and settings.quantize in ("int8", "int8-static"):
        size /= INT8_SHRINK
    return size


def _model_folder(model: str) -> Path | None:
    local = Path(model).expanduser()
    if local.is_dir():
        return local
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(model, local_files_only=True))
    except Exception:  # not in the cache (or not a hub id): nothing to measure before the download
        return None


def available_mb() -> float:
    """Memory this process can still take: the machine's MemAvailable, or less when a cgroup (a
    container's --memory) limits it."""
    available = _meminfo_available_mb()
    limit = _cgroup_room_mb()
    return min(available, limit) if limit is not None else available


def _meminfo_available_mb() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")) / MB


def _cgroup_room_mb() -> float | None:
    """cgroup v2's memory.max minus memory.current for this process's group; None when unlimited."""
    try:
        group = Path("/proc/self/cgroup").read_text().strip().split("::", 1)[-1]
        base = Path("/sys/fs/cgroup") / group.lstrip("/")
        limit = (base / "memory.max").read_text().strip()
        if limit == "max":
            return None
        return (int(limit) - int((base / "memory.current").read_text())) / MB
    except (OSError, ValueError):
        return None


def check_memory(footprints: Sequence[ModelFootprint], limit_mb: float | None = None) -> float:
    """The estimate in MB, or ConfigurationError when it exceeds ``limit_mb`` (default: `available_mb`)."""
    measured = [footprint for footprint in footprints if footprint.replicas_on_cpu]
    total = PROCESS_BASE_MB + sum(footprint.estimate_mb for footprint in measured)
    room, source = (limit_mb, "--memory-limit-mb") if limit_mb is not None else (available_mb(), "available")
    unknown = [footprint.name for footprint in measured if footprint.weights_mb is None]
    if unknown:
        logger.info("memory estimate leaves out %s: its weights are not on this machine yet", ", ".join(unknown))
    if total > room:
        parts = ", ".join(_described(footprint) for footprint in measured)
        raise ConfigurationError(
            f"the models need about {total:,.0f} MB ({parts}, plus {PROCESS_BASE_MB:.0f} MB for the process) but "
            f"{room:,.0f} MB is {source}: serve fewer models or replicas, or smaller ones "
            "(--backend onnx --quantize int8 keeps about a quarter of the weights)"
        )
    return total


def _described(footprint: ModelFootprint) -> str:
    if footprint.weights_mb is None:
        return f"{footprint.name} not counted (its weights are not on this machine yet)"
    return f"{footprint.name} ~{footprint.estimate_mb:,.0f} MB ({footprint.replicas_on_cpu} replica(s))"
