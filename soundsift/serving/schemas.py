"""Request and response bodies of the HTTP API (pydantic; they make the OpenAPI schema)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from soundsift.core.results import Classification, FailedInput
from soundsift.detection.results import Detection


class ClassifyResponse(Classification):
    elapsed_ms: float = Field(description="Server time for this request, in milliseconds.")


class BatchResponse(BaseModel):
    results: list[Classification | FailedInput] = Field(description="One entry per uploaded file, in order.")
    elapsed_ms: float


class DetectResponse(Detection):
    elapsed_ms: float


class EmbeddingResponse(BaseModel):
    model: str
    dim: int
    embeddings: list[list[float]] = Field(description="L2-normalised vectors, one per input.")


class TextEmbedRequest(BaseModel):
    texts: list[str] = Field(min_length=1, max_length=1000, description="Texts, embedded exactly as given.")
    model: str | None = Field(
        default=None,
        max_length=500,
        description="Which served model answers (see /api/info; default: the first).",
    )


class ServedModelInfo(BaseModel):
    name: str = Field(description="What a request's 'model' field calls it.")
    model: str = Field(description="Its checkpoint id.")
    backend: str
    devices: list[str]
    sample_rate: int
    dim: int = Field(description="Size of its embeddings.")
    default: bool = Field(description="The model a request without 'model' gets.")


class InfoResponse(BaseModel):
    version: str
    model: str = Field(description="The default model's checkpoint id.")
    models: list[ServedModelInfo] = Field(description="Every served model, the default first.")
    ensembles: bool = Field(description="Served models may be joined by '+' on the classify routes.")
    devices: list[str]
    backend: str
    sample_rate: int
    ready: bool
    auth_required: bool
    limits: dict[str, float | int | None]
    defaults: dict[str, float | str | list[str]]


class AdapterSummary(BaseModel):
    """A stored adapter: what it teaches and how it was taught."""

    name: str
    labels: list[str]
    examples: dict[str, int] = Field(description="Usable clips per taught label.")
    negatives: int = Field(description="'None of these' clips it was taught with.")
    method: str = Field(description="prototype, tip or probe, with its options in 'options'.")
    options: dict[str, float]
    cross_validated: bool
    thresholds: dict[str, float] = Field(
        description="Calibrated similarity per label below which it is 'none of these'."
    )
    model: str
    created: str
    skipped: list[dict[str, str]] = Field(default_factory=list, description="Clips that could not be used, and why.")


class AdapterList(BaseModel):
    adapters: list[AdapterSummary]
