"""POST /api/classify and /api/classify/batch."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Depends, File, UploadFile

from soundsift.serving.dependencies import RUNS_MODEL, ScoringForm, Service, check_file_count, upload_of
from soundsift.serving.errors import ApiError
from soundsift.serving.schemas import BatchResponse, ClassifyResponse
from soundsift.serving.service import elapsed_ms

router = APIRouter(prefix="/api", tags=["classify"])


@router.post("/classify", response_model=ClassifyResponse, summary="Classify one audio file", dependencies=[RUNS_MODEL])
async def classify(
    service: Service,
    audio: Annotated[
        list[UploadFile], File(description="One audio or video file (WAV, MP3, FLAC, OGG, M4A, WebM, …).")
    ],
    form: Annotated[ScoringForm, Depends()],
) -> ClassifyResponse:
    started = time.perf_counter()
    if len(audio) != 1:
        raise ApiError(
            422, "too_many_files", f"send one 'audio' file here ({len(audio)} given); use /api/classify/batch"
        )
    prepared = await service.prepare_labels(form.labels, form.options, form.adapter, model=form.model)
    result = await service.classify(upload_of(audio[0]), prepared, form.options)
    return ClassifyResponse(**result.model_dump(), elapsed_ms=elapsed_ms(started))


@router.post(
    "/classify/batch",
    response_model=BatchResponse,
    summary="Classify several files against one label set",
    dependencies=[RUNS_MODEL],
)
async def classify_batch(
    service: Service,
    audio: Annotated[list[UploadFile], File(description="Repeat the field once per file.")],
    form: Annotated[ScoringForm, Depends()],
) -> BatchResponse:
    started = time.perf_counter()
    check_file_count(len(audio), service.settings.max_batch_files)
    prepared = await service.prepare_labels(form.labels, form.options, form.adapter, model=form.model)
    results = await service.classify_many(
        [upload_of(upload, index) for index, upload in enumerate(audio)], prepared, form.options
    )
    return BatchResponse(results=results, elapsed_ms=elapsed_ms(started))
