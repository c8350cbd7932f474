"""Settings, validated at construction. Two objects, composed rather than merged:

- `ModelSettings`: what a `Classifier` needs (checkpoint, runtime, scoring defaults, input limits);
- `ServerSettings`: what the HTTP service adds (address, auth, upload and queue limits).

Every field is a keyword, a CLI flag and a ``SOUNDSIFT_<FIELD>`` environment variable (e.g.
``SOUNDSIFT_MODEL=/models/clap``). Unknown names are refused, and so is any value out of range, also
when settings are overridden later (`ModelSettings.with_overrides`).
"""

from __future__ import annotations

import ipaddress
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from soundsift.core.text import check_text
from soundsift.errors import ConfigurationError, LabelError

DEFAULT_MODEL = "laion/clap-htsat-fused"
DEFAULT_TEMPLATE = "This is a sound of {}."


def validate_templates(templates: list[str], *, max_chars: int) -> list[str]:
    """Each prompt template needs exactly one ``{}`` where the label phrase goes, and a bounded length."""
    if not templates:
        raise LabelError("at least one prompt template is needed")
    for template in templates:
        check_text(template, "template")
        if len(template) > max_chars:
            raise LabelError(f"a template is {len(template)} characters; the limit is {max_chars}")
        if template.count("{}") != 1:
            raise LabelError(f"template {template!r} must contain exactly one '{{}}' placeholder for the label")
    return templates


class _SoundsiftSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SOUNDSIFT_", extra="forbid", validate_default=True)

    def with_overrides(self, **overrides: Any) -> Any:
        """A validated copy with some fields changed; unknown names and bad values raise ConfigurationError."""
        return type(self).build(**{**self.model_dump(), **overrides})

    @classmethod
    def build(cls, **values: Any) -> Any:
        """Construct from keywords (and SOUNDSIFT_* variables), raising ConfigurationError with every problem."""
        try:
            return cls(**values)
        except ValidationError as error:
            raise ConfigurationError(validation_message(error)) from None


class ModelSettings(_SoundsiftSettings):
    """What a Classifier needs: the checkpoint and runtime, scoring defaults and limits on inputs."""

    model: str = Field(DEFAULT_MODEL, description="Hugging Face hub id or local folder of a CLAP checkpoint.")
    device: str = Field("auto", description="auto (CUDA when available), cpu, cuda or cuda:N.")
    backend: Literal["torch", "onnx"] = Field("torch", description="Inference backend: torch or onnx.")
    quantize: Literal["none", "int8"] = Field(
        "none", description="onnx backend: int8 dynamic quantization of linear layers when exporting."
    )
    quantize_encoders: list[Literal["audio", "text"]] = Field(
        default_factory=lambda: ["audio", "text"], description="onnx backend: which encoders --quantize applies to."
    )
    threads: int | None = Field(None, ge=1, description="onnx backend: intra-op threads (default: physical cores).")
    fp16: bool = Field(False, description="Run the model in float16 (CUDA only).")
    batch_size: int = Field(8, ge=1, le=1024, description="Clips per model call.")
    templates: list[str] = Field(
        default_factory=lambda: [DEFAULT_TEMPLATE],
        description="Prompt templates with a {} placeholder; several are averaged (prompt ensemble).",
    )
    threshold: float = Field(0.35, ge=0.0, le=1.0, description="Confidence below this is 'uncertain'.")
    min_margin: float = Field(0.05, ge=0.0, le=1.0, description="Top-1 minus top-2 score below this is 'uncertain'.")
    label_threshold: float = Field(
        0.3, ge=-1.0, le=1.0, description="Multi-label mode: cosine similarity at or above which a label is present."
    )
    translate: bool = Field(
        True, description="Translate labels in other languages (e.g. Chinese) to English prompts via the glossary."
    )
    translator: str | None = Field(
        None,
        description="Hub id or folder of a translation model for labels the glossary lacks "
        "(e.g. Helsinki-NLP/opus-mt-zh-en); off by default.",
    )
    glossary: list[str] = Field(
        default_factory=list, description="Extra glossary TSV files (english phrasings TAB chinese variants)."
    )
    max_labels: int = Field(100, ge=2, le=10_000, description="Most labels (classes) per request.")
    max_label_chars: int = Field(200, ge=1, le=10_000, description="Longest label phrase, in characters.")
    max_synonyms: int = Field(16, ge=1, le=1000, description="Most '|' synonyms and exclusions in one label.")
    max_label_text_chars: int = Field(
        20_000, ge=1, description="Most characters of label text in one request, all labels together."
    )
    max_templates: int = Field(16, ge=1, le=1000, description="Most prompt templates per request.")
    max_template_chars: int = Field(300, ge=3, le=10_000, description="Longest prompt template, in characters.")
    max_duration_s: float = Field(600.0, gt=0, description="Longest audio accepted by classify, in seconds.")
    min_duration_s: float = Field(
        0.01, ge=0, description="Shortest audio accepted, in seconds (after resampling to the model's rate)."
    )
    max_decoded_mb: float = Field(
        512.0,
        gt=0,
        description="Most decoded PCM one input may produce at its own rate and channel count (float32 MB); "
        "bounds decode work and refuses decompression bombs before decoding.",
    )
    max_channels: int = Field(64, ge=1, description="Most audio channels accepted in one input.")
    silence_db: float = Field(-60.0, le=0.0, description="Audio whose RMS is below this dBFS is flagged silent.")
    text_cache_size: int = Field(4096, ge=0, description="Text embeddings kept in memory (least recently used go).")

    @field_validator("templates")
    @classmethod
    def _templates_are_usable(cls, templates: list[str]) -> list[str]:
        try:
            return validate_templates(templates, max_chars=10_000)
        except LabelError as error:
            raise ValueError(str(error)) from None

    @field_validator("device")
    @classmethod
    def _device_is_known(cls, device: str) -> str:
        device = device.strip().lower()
        if device in ("auto", "cpu", "cuda") or (device.startswith("cuda:") and device[5:].isdigit()):
            return device
        raise ValueError(f"device {device!r} is not one of auto, cpu, cuda, cuda:N")


class ServerSettings(_SoundsiftSettings):
    """What the HTTP service adds to a model: address, auth, and limits on requests and queues."""

    host: str = Field("127.0.0.1", description="Address to listen on (0.0.0.0 exposes it to the network).")
    port: int = Field(7860, ge=0, le=65535, description="TCP port.")
    gpus: str | None = Field(
        None, description="'all', 'none' or a list like '0,1'; one model replica per GPU. Overrides device."
    )
    api_key: str | None = Field(
        None,
        min_length=8,
        description="When set, every route that can run the model (the API and the web page) needs it: "
        "'Authorization: Bearer <key>', or the page's login.",
    )
    cors_origins: list[str] = Field(default_factory=list, description="Origins allowed by CORS ('*' for any).")
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
    def loopback_only(self) -> bool:
        """True when only this machine can connect (127.0.0.0/8, ::1 or localhost)."""
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


def validation_message(error: ValidationError) -> str:
    """Every problem of a pydantic error on one line: 'field: message; field: message'."""
    return "; ".join(
        f"{'.'.join(str(part) for part in issue['loc']) or 'settings'}: {issue['msg']}" for issue in error.errors()
    )
