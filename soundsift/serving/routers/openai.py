"""POST /v1/embeddings: CLAP text embeddings in the shape of OpenAI's embeddings API, so clients
written for it (the ``openai`` package, LangChain, vector-database loaders) can use soundsift as
their embedding server with only a base URL and key. The vectors live in CLAP's shared space: text
embedded here can be searched against audio from /api/embed/audio, and the other way round.

The same key, limits, admission and model engine as /api/embed/text. ``model`` may name the served
model or be anything (one model is served; the answer says which). Token usage is not metered: the
``usage`` counts are 0."""

from __future__ import annotations

import base64
from typing import Annotated, Literal

import numpy as np
from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from soundsift.core.text import check_text
from soundsift.serving.dependencies import RUNS_MODEL, Service
from soundsift.serving.errors import ApiError

router = APIRouter(prefix="/v1", tags=["openai"])
MAX_INPUTS = 1000


class EmbeddingsRequest(BaseModel):
    # OpenAI's clients send fields soundsift has no use for (``user``): they are accepted and ignored.
    model_config = ConfigDict(extra="ignore")

    input: Annotated[
        str | list[str], Field(description="A text, or a list of texts (at most 1000), each embedded as given.")
    ]
    model: str | None = Field(default=None, description="Accepted for compatibility; the served model answers.")
    encoding_format: Literal["float", "base64"] = Field(
        default="float", description="float: lists of numbers; base64: little-endian float32 bytes, base64-encoded."
    )
    dimensions: int | None = Field(default=None, description="Must be the model's own size if given (512).")


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class Usage(BaseModel):
    prompt_tokens: int = 0
    total_tokens: int = 0


class EmbeddingsResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: Usage = Field(default_factory=Usage)


@router.post(
    "/embeddings",
    response_model=EmbeddingsResponse,
    summary="CLAP text embeddings, OpenAI-compatible",
    dependencies=[RUNS_MODEL],
)
async def embeddings(service: Service, request: EmbeddingsRequest) -> EmbeddingsResponse:
    texts = [request.input] if isinstance(request.input, str) else request.input
    if not 1 <= len(texts) <= MAX_INPUTS:
        raise ApiError(422, "invalid_request", f"input: give 1 to {MAX_INPUTS} texts, not {len(texts)}")
    limit = service.model_settings.max_label_chars
    for index, text in enumerate(texts):
        if len(text) > limit:
            raise ApiError(422, "text_too_long", f"input {index} is {len(text)} characters; the limit is {limit}")
        check_text(text, f"input {index}")
    if request.dimensions is not None and request.dimensions != service.classifier.dim:
        raise ApiError(
            422,
            "invalid_request",
            f"dimensions: this model's embeddings have {service.classifier.dim}, not {request.dimensions}",
        )
    vectors = await service.embed_text(texts)
    return EmbeddingsResponse(
        data=[
            Embedding(index=index, embedding=_encoded(vector, request.encoding_format))
            for index, vector in enumerate(vectors)
        ],
        model=service.classifier.model_id,
    )


def _encoded(vector: np.ndarray, encoding: str) -> list[float] | str:
    if encoding == "base64":
        return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")
    return [float(x) for x in vector]
