"""Settings of a Classifier, validated at construction.

`ModelSettings` holds what a `Classifier` needs (checkpoint, runtime, scoring defaults, input
limits); the HTTP service adds its own `soundsift.serving.settings.ServerSettings` beside it
(composition, not one object for everything). Every field is a keyword, a CLI flag and a
``SOUNDSIFT_<FIELD>`` environment variable (e.g. ``SOUNDSIFT_MODEL=/models/clap``). Unknown names
are refused, and so is any value out of range, also when settings are overridden later
(`ModelSettings.with_overrides`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from soundsift.core.gallery import resolve_model
from soundsift.core.text import check_text
from soundsift.errors import ConfigurationError, LabelError

DEFAULT_MODEL = "laion/clap-htsat-fused"
DEFAULT_TEMPLATE = "This is a sound of {}."
ENCODERS: tuple[Literal["audio", "text"], ...] = ("audio", "text")


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


class SoundsiftSettings(BaseSettings):
    """Base of every settings object: SOUNDSIFT_* variables, unknown names refused, defaults validated."""

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


class ModelSettings(SoundsiftSettings):
    """What a Classifier needs: the checkpoint and runtime, scoring defaults and limits on inputs."""

    model: str = Field(
        DEFAULT_MODEL,
        description="Hugging Face hub id or local folder of a CLAP checkpoint, or a gallery alias "
        "(fused, unfused, general, music-and-speech, music; `soundsift models`).",
    )
    device: str = Field("auto", description="auto (CUDA when available), cpu, cuda or cuda:N.")
    backend: Literal["torch", "onnx"] = Field("torch", description="Inference backend: torch or onnx.")
    quantize: Literal["none", "int8", "int8-static"] = Field(
        "none",
        description="onnx backend, when exporting: int8 (dynamic: int8 weights, activations quantized on the fly) "
        "or int8-static (audio activations too, ranges calibrated on the calibrate folder; text stays dynamic).",
    )
    calibrate: str | None = Field(
        None,
        description="onnx backend, quantize int8-static: folder of audio to calibrate activation ranges on "
        "(default: the bundled example clips); one file in five is held out to measure the result.",
    )
    quantize_encoders: list[Literal["audio", "text"]] = Field(
        default_factory=lambda: list(ENCODERS), description="onnx backend: which encoders --quantize applies to."
    )
    threads: int | None = Field(None, ge=1, description="onnx backend: intra-op threads (default: physical cores).")
    clips_per_call: int | None = Field(
        None,
        ge=1,
        le=1024,
        description="onnx backend: clips per audio-encoder run (default: 1 on a CPU, where a clip's 4096 tokens "
        "already fill the matrix products and more clips only grow the working set; the whole batch on a GPU).",
    )
    fp16: bool = Field(False, description="Run the model in float16 (CUDA only).")
    adapter: str | None = Field(
        None,
        description="An adapter file from `soundsift teach`: its taught labels join every request's labels "
        "(refused if it was taught on a model whose embeddings differ).",
    )
    batch_size: int = Field(8, ge=1, le=1024, description="Clips per model call.")
    reference_int16: bool = Field(
        True,
        description="Pass the samples through 16-bit integers before the features, as LAION's laion_clap does in "
        "training and evaluation (clip to [-1, 1], x32767, int16, /32767), so embeddings match the reference; "
        "off keeps float precision and peaks above 1.",
    )
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

    @field_validator("model")
    @classmethod
    def _aliases_name_checkpoints(cls, model: str) -> str:
        if Path(model).expanduser().exists():  # a folder of that name is meant, not the alias
            return model
        return resolve_model(model)

    @field_validator("device")
    @classmethod
    def _device_is_known(cls, device: str) -> str:
        device = device.strip().lower()
        if device in ("auto", "cpu", "cuda") or (device.startswith("cuda:") and device[5:].isdigit()):
            return device
        raise ValueError(f"device {device!r} is not one of auto, cpu, cuda, cuda:N")


def validation_message(error: ValidationError) -> str:
    """Every problem of a pydantic error on one line: 'field: message; field: message'."""
    return "; ".join(
        f"{'.'.join(str(part) for part in issue['loc']) or 'settings'}: {issue['msg']}" for issue in error.errors()
    )
