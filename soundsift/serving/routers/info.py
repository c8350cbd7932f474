"""GET /api/info: model, devices, limits and defaults, for clients to adapt to this server."""

from __future__ import annotations

from fastapi import APIRouter

from soundsift._version import __version__
from soundsift.serving.dependencies import Service
from soundsift.serving.schemas import InfoResponse, ServedModelInfo

router = APIRouter(prefix="/api", tags=["info"])


@router.get("/info", response_model=InfoResponse, summary="Model, devices, limits and defaults")
async def info(service: Service) -> InfoResponse:
    model, settings = service.model_settings, service.settings
    return InfoResponse(
        version=__version__,
        model=service.classifier.model_id,
        models=[
            ServedModelInfo(
                name=served.name,
                model=served.classifier.model_id,
                backend=served.settings.backend,
                devices=served.devices,
                sample_rate=served.classifier.sample_rate,
                dim=served.classifier.dim,
                default=served is service.default,
            )
            for served in service.models.values()
        ],
        ensembles=len(service.models) > 1,
        devices=service.devices,
        backend=model.backend,
        sample_rate=service.classifier.sample_rate,
        ready=service.ready,
        auth_required=settings.api_key is not None,
        limits={
            "max_upload_mb": settings.max_upload_mb,
            "max_duration_s": model.max_duration_s,
            "min_duration_s": model.min_duration_s,
            "max_decoded_mb": model.max_decoded_mb,
            "max_channels": model.max_channels,
            "max_labels": model.max_labels,
            "max_label_chars": model.max_label_chars,
            "max_synonyms": model.max_synonyms,
            "max_label_text_chars": model.max_label_text_chars,
            "max_templates": model.max_templates,
            "max_template_chars": model.max_template_chars,
            "max_batch_files": settings.max_batch_files,
            "max_queue": settings.max_queue,
            "micro_batch_size": settings.micro_batch_size,
            "max_detect_duration_s": settings.max_detect_duration_s,
            "max_detect_windows": settings.max_detect_windows,
        },
        defaults={
            "threshold": model.threshold,
            "min_margin": model.min_margin,
            "label_threshold": model.label_threshold,
            "templates": model.templates,
        },
    )
