"""What the routers share: the service, readiness, the scoring form fields, and uploads."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import Depends, Form, Request, UploadFile
from fastapi.security import HTTPBearer

from soundsift.core.scoring import SCORING_HELP, ScoringOptions
from soundsift.errors import QueueFullError
from soundsift.i18n.presets import preset_labels, preset_names
from soundsift.serving.errors import RETRY_AFTER_S, ApiError, printable
from soundsift.serving.service import ClassificationService, Upload

LABELS_HELP = (
    "Comma-separated labels ('|' joins synonyms, '(not X)' excludes a sound; Chinese is translated), "
    "or the field repeated once per label."
)
PRESET_HELP = f"A named label set instead of labels: {', '.join(preset_names())}."
ADAPTER_HELP = (
    "A stored adapter's name (see /api/adapters): its taught labels join the labels, which become optional; "
    "on /api/search, a query naming a taught label is searched with what the adapter learnt."
)
MODEL_HELP = (
    "Which served model answers (see /api/info: its name, alias or checkpoint id; default: the first); on the "
    "classify routes also several joined by '+' (fused+general), an ensemble averaging their probabilities."
)
ONE_MODEL_HELP = "Which served model answers (see /api/info: its name, alias or checkpoint id; default: the first)."
# Documents the key in the OpenAPI schema; the AccessGuard middleware is what enforces it.
bearer_scheme = HTTPBearer(auto_error=False, description="SOUNDSIFT_API_KEY, when the server has one")
_UNSAFE_NAME = re.compile(r"[\x00-\x1f\x7f]")


def get_service(request: Request) -> ClassificationService:
    service: ClassificationService = request.app.state.service
    return service


Service = Annotated[ClassificationService, Depends(get_service)]


async def require_ready(service: Service) -> None:
    if not service.ready:
        if service.draining:
            raise ApiError(503, "shutting_down", "the server is shutting down", {"Retry-After": RETRY_AFTER_S})
        raise ApiError(503, "not_ready", "the model is still loading", {"Retry-After": RETRY_AFTER_S})


async def model_admission(service: Service) -> None:
    """Declares a route that runs the model (``dependencies=[RUNS_MODEL]``): refused with 503 when
    every admission place is taken. The app collects the routes that carry it, and its admission
    gate refuses them the same way before their bodies are even read."""
    if service.full:
        raise QueueFullError("every admission place is taken" if not service.draining else "shutting down")


RUNS_MODEL = Depends(model_admission)


def _help(field: str) -> str:
    text = SCORING_HELP[field]
    return text[0].upper() + text[1:] + "."


class ScoringForm:
    """The form fields every classification route shares: labels or a preset, and how to decide."""

    def __init__(
        self,
        labels: Annotated[list[str] | None, Form(description=LABELS_HELP)] = None,
        preset: Annotated[str | None, Form(description=PRESET_HELP)] = None,
        threshold: Annotated[float | None, Form(ge=0, le=1, description=_help("threshold"))] = None,
        min_margin: Annotated[float | None, Form(ge=0, le=1, description=_help("min_margin"))] = None,
        template: Annotated[str | None, Form(description=_help("templates"))] = None,
        multi_label: Annotated[bool, Form(description=_help("multi_label"))] = False,
        label_threshold: Annotated[
            float | None, Form(ge=-1, le=1, description=_help("label_thresholds") + ", one for every label")
        ] = None,
        adapter: Annotated[str | None, Form(description=ADAPTER_HELP)] = None,
        model: Annotated[str | None, Form(max_length=500, description=MODEL_HELP)] = None,
    ) -> None:
        self.adapter = adapter or None
        self.model = model or None
        self.labels = labels_or_preset(labels, preset, optional=self.adapter is not None)
        self.options = ScoringOptions(
            templates=templates_of(template),
            multi_label=multi_label,
            threshold=threshold,
            min_margin=min_margin,
            label_thresholds=label_threshold,
        )


def labels_or_preset(labels: list[str] | None, preset: str | None, *, optional: bool = False) -> str | list[str] | None:
    """The request's labels: comma-separated or repeated 'labels' fields, or a named 'preset'
    (``optional`` when an adapter brings taught labels)."""
    if labels and preset:
        raise ApiError(422, "invalid_labels", "send 'labels' or 'preset', not both")
    if preset:
        try:
            return preset_labels(preset)
        except KeyError as error:
            raise ApiError(422, "invalid_labels", printable(str(error.args[0]))) from None
    if not labels:
        if optional:
            return None
        raise ApiError(422, "invalid_request", "labels: Field required (or send 'preset' or 'adapter')")
    return labels[0] if len(labels) == 1 else labels


def templates_of(template: str | None) -> tuple[str, ...] | None:
    return (template,) if template and template.strip() else None


def check_file_count(count: int, limit: int) -> None:
    if count > limit:
        raise ApiError(422, "too_many_files", f"{count} files; the limit is {limit} (SOUNDSIFT_MAX_BATCH_FILES)")


def upload_of(upload: UploadFile, index: int = 0) -> Upload:
    return Upload.of(upload.file, safe_filename(upload.filename, f"file-{index}"))


def safe_filename(name: str | None, fallback: str) -> str:
    """The client's file name as shown back in results: printable, no folders, at most 255 characters."""
    cleaned = _UNSAFE_NAME.sub("", printable(name or "")).replace("\\", "/").rsplit("/", 1)[-1].strip()
    return cleaned[:255] or fallback
