"""POST /api/embed/audio and /api/embed/text: CLAP's unit embeddings."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, File, Form, UploadFile

from soundsift.core.text import check_text
from soundsift.serving.dependencies import ONE_MODEL_HELP, RUNS_MODEL, Service, check_file_count, upload_of
from soundsift.serving.errors import ApiError
from soundsift.serving.schemas import EmbeddingResponse, TextEmbedRequest

router = APIRouter(prefix="/api", tags=["embed"])


@router.post(
    "/embed/audio",
    response_model=EmbeddingResponse,
    summary="L2-normalised CLAP audio embeddings",
    dependencies=[RUNS_MODEL],
)
async def embed_audio(
    service: Service,
    audio: Annotated[list[UploadFile], File(description="One or more files.")],
    model: Annotated[str | None, Form(max_length=500, description=ONE_MODEL_HELP)] = None,
) -> EmbeddingResponse:
    check_file_count(len(audio), service.settings.max_batch_files)
    uploads = [upload_of(upload, index) for index, upload in enumerate(audio)]
    vectors = await service.embed_audio(uploads, model=model)
    return embedding_response(service.served(model).classifier.model_id, list(vectors))


@router.post(
    "/embed/text",
    response_model=EmbeddingResponse,
    summary="L2-normalised CLAP text embeddings",
    dependencies=[RUNS_MODEL],
)
async def embed_text(service: Service, request: TextEmbedRequest) -> EmbeddingResponse:
    limit = service.model_settings.max_label_chars
    for index, text in enumerate(request.texts):
        if len(text) > limit:
            raise ApiError(422, "text_too_long", f"text {index} is {len(text)} characters; the limit is {limit}")
        check_text(text, f"text {index}")
    vectors = await service.embed_text(request.texts, model=request.model)
    return embedding_response(service.served(request.model).classifier.model_id, list(vectors))


def embedding_response(model: str, vectors: list[Any]) -> EmbeddingResponse:
    return EmbeddingResponse(
        model=model,
        dim=len(vectors[0]) if vectors else 0,
        embeddings=[[float(x) for x in vector] for vector in vectors],
    )
