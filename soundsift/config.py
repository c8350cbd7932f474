"""The one configuration object. Every field is a keyword of `Classifier`, a CLI flag and a
`SOUNDSIFT_<FIELD>` environment variable (e.g. ``SOUNDSIFT_MODEL=/models/clap``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from soundsift.errors import LabelError

DEFAULT_MODEL = "laion/clap-htsat-fused"
DEFAULT_TEMPLATE = "This is a sound of {}."


def validate_templates(templates: list[str]) -> list[str]:
    """Each prompt template needs exactly one ``{}`` where the label phrase goes."""
    if not templates:
        raise LabelError("at least one prompt template is needed")
    for template in templates:
        if template.count("{}") != 1:
            raise LabelError(f"template {template!r} must contain exactly one '{{}}' placeholder for the label")
    return templates


class Settings(BaseSettings):
    """soundsift settings; environment variables use the ``SOUNDSIFT_`` prefix."""

    model_config = SettingsConfigDict(env_prefix="SOUNDSIFT_", extra="forbid", validate_default=True)

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
    max_labels: int = Field(100, ge=2, description="Most labels (classes) per request.")
    max_label_chars: int = Field(200, ge=1, description="Longest label text, in characters.")
    max_duration_s: float = Field(600.0, gt=0, description="Longest audio accepted by classify, in seconds.")
    max_detect_duration_s: float = Field(
        86_400.0, gt=0, description="Longest recording accepted by detect (streamed), in seconds."
    )
    silence_db: float = Field(-60.0, le=0.0, description="Audio whose RMS is below this dBFS is flagged silent.")
    text_cache_size: int = Field(4096, ge=0, description="Text embeddings kept in memory.")

    host: str = Field("127.0.0.1", description="Server: address to listen on (0.0.0.0 exposes it to the network).")
    port: int = Field(7860, ge=0, le=65535, description="Server: TCP port.")
    gpus: str | None = Field(
        None, description="Server: 'all', 'none' or a list like '0,1'; one model replica per GPU. Overrides device."
    )
    api_key: str | None = Field(None, description="Server: when set, /api/* needs 'Authorization: Bearer <key>'.")
    cors_origins: list[str] = Field(default_factory=list, description="Server: origins allowed by CORS ('*' for any).")
    max_upload_mb: float = Field(50.0, gt=0, description="Server: largest request body, in MB.")
    max_batch_files: int = Field(32, ge=1, description="Server: most files in one /api/classify/batch request.")
    micro_batch_size: int = Field(16, ge=1, description="Server: most clips grouped into one model call.")
    micro_batch_wait_ms: float = Field(10.0, ge=0, description="Server: longest wait for more clips to batch.")
    max_queue: int = Field(64, ge=1, description="Server: clips waiting for the model before 503 responses.")

    @field_validator("templates")
    @classmethod
    def _templates_have_placeholder(cls, templates: list[str]) -> list[str]:
        try:
            return validate_templates(templates)
        except LabelError as error:
            raise ValueError(str(error)) from None

    @field_validator("gpus")
    @classmethod
    def _gpus_are_known(cls, gpus: str | None) -> str | None:
        if gpus is None:
            return None
        gpus = gpus.strip().lower()
        if gpus in ("all", "none") or all(part.strip().isdigit() for part in gpus.split(",")):
            return gpus
        raise ValueError(f"gpus {gpus!r} is not 'all', 'none' or a comma-separated list of GPU indices")

    @field_validator("device")
    @classmethod
    def _device_is_known(cls, device: str) -> str:
        device = device.strip().lower()
        if device in ("auto", "cpu", "cuda") or (device.startswith("cuda:") and device[5:].isdigit()):
            return device
        raise ValueError(f"device {device!r} is not one of auto, cpu, cuda, cuda:N")
