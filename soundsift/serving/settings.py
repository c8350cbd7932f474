"""Settings of the HTTP service, beside the model's own `ModelSettings` (see soundsift.core.settings)."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from soundsift.core.settings import SoundsiftSettings


class ServerSettings(SoundsiftSettings):
    """What the HTTP service adds to a model: address, auth, and limits on requests and queues."""

    models: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Every model served (hub ids, aliases or folders; comma-separated in SOUNDSIFT_MODELS), the "
        "first being the default; a request's 'model' field picks one, or several joined by '+' as an ensemble. "
        "Empty: the one model setting.",
    )
    memory_limit_mb: float | None = Field(
        None,
        gt=0,
        description="Memory the served models may take, MB; the server refuses to start when its estimate is "
        "larger (default: what the machine, or its container, has available at start).",
    )
    host: str = Field("127.0.0.1", description="Address to listen on (0.0.0.0 exposes it to the network).")
    port: int = Field(7860, ge=0, le=65535, description="TCP port.")
    gpus: str | None = Field(
        None, description="'all', 'none' or a list like '0,1'; one model replica per GPU. Overrides device."
    )
    replicas: int = Field(
        1,
        ge=1,
        le=64,
        description="Model replicas per device, each with its own queue worker; on a CPU each runs the onnx "
        "backend's threads intra-op threads (default: the physical cores shared out among the replicas).",
    )
    oversubscribe: bool = Field(
        False,
        description="Allow replicas x threads above the physical cores (refused otherwise: the replicas' "
        "threads would take turns on the same cores and every call would slow down).",
    )
    api_key: str | None = Field(
        None,
        min_length=8,
        description="When set, every route that can run the model (the API and the web page) needs it: "
        "'Authorization: Bearer <key>', or the page's login.",
    )
    session_max_age_s: float = Field(
        12 * 3600.0, gt=0, le=30 * 86400, description="How long a login on the page lasts, in seconds (server-checked)."
    )
    session_store: str | None = Field(
        None,
        description="SQLite file where logged-out sessions are remembered until they expire, so sessions survive a "
        "restart (default: in memory, and a restart ends every session).",
    )
    auth_failure_burst: int = Field(
        10, ge=1, le=10_000, description="Wrong keys (bearer or /login) a client address may send before it gets 429."
    )
    auth_failure_refill_s: float = Field(
        6.0, gt=0, le=3600, description="Seconds after which a locked-out address may try one more key."
    )
    cors_origins: list[str] = Field(
        default_factory=list,
        description="Origins allowed by CORS ('*' for any); the ones named (not '*') may also use the page's session.",
    )
    max_upload_mb: float = Field(50.0, gt=0, description="Largest request body, in MB (enforced while reading).")
    max_batch_files: int = Field(32, ge=1, le=1024, description="Most files in one /api/classify/batch request.")
    micro_batch_size: int = Field(16, ge=1, le=1024, description="Most clips grouped into one model call.")
    micro_batch_wait_ms: float = Field(10.0, ge=0, le=10_000, description="Longest wait for more clips to batch.")
    max_queue: int = Field(64, ge=1, description="Requests admitted at once (decoding or waiting for the model).")
    decode_workers: int = Field(
        2, ge=1, le=64, description="Uploads decoded at once; each holds at most one input's decoded audio."
    )
    max_detect_duration_s: float = Field(3600.0, gt=0, description="Longest recording /api/detect accepts, seconds.")
    max_detect_windows: int = Field(2000, ge=1, description="Most windows one /api/detect request may score.")
    graceful_timeout_s: float = Field(
        30.0, ge=0, le=3600, description="On SIGTERM, how long running requests may finish before queued ones get 503."
    )
    ui: bool = Field(True, description="Serve the web page at / (the API is served either way).")
    adapter_dir: str | None = Field(
        None,
        description="Folder where adapters taught through the API and page are kept (default: a private "
        "temporary folder, emptied when the server stops).",
    )
    max_adapters: int = Field(32, ge=0, le=10_000, description="Most adapters stored at once (0: teaching is off).")
    max_teach_clips: int = Field(
        256, ge=1, le=10_000, description="Most clips (examples and negatives) in one teaching request."
    )
    search_index: str | None = Field(
        None, description="Index folder that /api/search searches and /api/index extends (soundsift index --index)."
    )
    library_roots: str | None = Field(
        None,
        description="Folders POST /api/index may index, separated by ':'; paths are resolved (symlinks "
        "followed) and anything outside them is refused. Unset: indexing over HTTP is off.",
    )

    @field_validator("models", mode="before")
    @classmethod
    def _models_are_listed(cls, models: object) -> object:
        if isinstance(models, str):
            models = models.split(",")
        if isinstance(models, list):
            models = [name.strip() for name in models if isinstance(name, str) and name.strip()] or []
            if len(set(models)) != len(models):
                raise ValueError("each model is served once")
        return models

    @field_validator("gpus")
    @classmethod
    def _gpus_are_known(cls, gpus: str | None) -> str | None:
        if gpus is None:
            return None
        gpus = gpus.strip().lower()
        if gpus in ("all", "none") or all(part.strip().isdigit() for part in gpus.split(",")):
            return gpus
        raise ValueError(f"gpus {gpus!r} is not 'all', 'none' or a comma-separated list of GPU indices")

    @property
    def library_root_paths(self) -> list[Path]:
        """The library roots, resolved (symlinks followed); empty when indexing over HTTP is off."""
        parts = (self.library_roots or "").split(os.pathsep)
        return [Path(os.path.realpath(os.path.expanduser(part.strip()))) for part in parts if part.strip()]

    @property
    def loopback_only(self) -> bool:
        """True when only this machine can connect (127.0.0.0/8, ::1 or localhost)."""
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False
