"""POST /api/detect: when each sound happens in a recording."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, File, Form, Request, UploadFile

from soundsift.core.audio import GATE_RANGE_DBFS
from soundsift.detection.events import EventRules, background_labels
from soundsift.detection.windows import MAX_WINDOW_S, MIN_HOP_S, MIN_WINDOW_S, DetectOptions
from soundsift.serving.dependencies import (
    ADAPTER_HELP,
    LABELS_HELP,
    ONE_MODEL_HELP,
    PRESET_HELP,
    RUNS_MODEL,
    Service,
    labels_or_preset,
    templates_of,
    upload_of,
)
from soundsift.serving.schemas import DetectResponse
from soundsift.serving.service import elapsed_ms

router = APIRouter(prefix="/api", tags=["detect"])


@router.post(
    "/detect",
    response_model=DetectResponse,
    summary="When each sound happens in a recording",
    dependencies=[RUNS_MODEL],
)
async def detect(
    request: Request,
    service: Service,
    audio: Annotated[UploadFile, File(description="A (long) recording.")],
    labels: Annotated[list[str] | None, Form(description=LABELS_HELP)] = None,
    preset: Annotated[str | None, Form(description=PRESET_HELP)] = None,
    window_s: Annotated[float, Form(ge=MIN_WINDOW_S, le=MAX_WINDOW_S, description="Window length, seconds.")] = 5.0,
    hop_s: Annotated[
        float | None, Form(ge=MIN_HOP_S, description="Seconds between windows (default window/2, at most window).")
    ] = None,
    threshold: Annotated[float, Form(ge=0, le=1, description="Score that starts an event.")] = 0.5,
    off_threshold: Annotated[float | None, Form(ge=0, le=1, description="Score that ends it.")] = None,
    smoothing_windows: Annotated[int, Form(ge=1, le=50)] = 1,
    min_duration_s: Annotated[float, Form(ge=0, le=86_400)] = 0.0,
    merge_gap_s: Annotated[float, Form(ge=0, le=86_400)] = 0.0,
    background: Annotated[str | None, Form(description="Labels that never make events.")] = None,
    template: Annotated[str | None, Form()] = None,
    min_dbfs: Annotated[
        float | None,
        Form(
            ge=GATE_RANGE_DBFS[0],
            le=GATE_RANGE_DBFS[1],
            description="Silence gate: windows quieter than this RMS level (dBFS) are not sent to the model.",
        ),
    ] = None,
    adapter: Annotated[str | None, Form(description=ADAPTER_HELP)] = None,
    model: Annotated[str | None, Form(max_length=500, description=ONE_MODEL_HELP)] = None,
) -> DetectResponse:
    started = time.perf_counter()
    rules = EventRules(
        threshold=threshold,
        off_threshold=off_threshold,
        smoothing_windows=smoothing_windows,
        min_duration_s=min_duration_s,
        merge_gap_s=merge_gap_s,
        background=background_labels(background),
    )
    options = DetectOptions(
        window_s=window_s, hop_s=hop_s, rules=rules, templates=templates_of(template), min_dbfs=min_dbfs
    )
    detection = await service.detect(
        upload_of(audio),
        labels_or_preset(labels, preset, optional=bool(adapter)),
        options,
        disconnected=request.is_disconnected,
        adapter=adapter or None,
        model=model,
    )
    return DetectResponse(**detection.model_dump(), elapsed_ms=elapsed_ms(started))
