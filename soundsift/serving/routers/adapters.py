"""/api/adapters: teach labels from uploaded clips (or upload an adapter file), list, download, delete."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, UploadFile
from fastapi.responses import Response

from soundsift.core.adapter import Adapter
from soundsift.serving.dependencies import ONE_MODEL_HELP, RUNS_MODEL, Service, upload_of
from soundsift.serving.errors import ApiError
from soundsift.serving.schemas import AdapterList, AdapterSummary

router = APIRouter(prefix="/api", tags=["adapters"])


def summary(adapter: Adapter) -> AdapterSummary:
    return AdapterSummary(
        name=adapter.name,
        labels=list(adapter.labels),
        examples=adapter.examples,
        negatives=len(adapter.negatives),
        method=adapter.method,
        options=adapter.options,
        cross_validated=adapter.cross_validated,
        thresholds={label: float(value) for label, value in zip(adapter.labels, adapter.thresholds)},
        model=adapter.model,
        created=adapter.created,
        skipped=[vars(item) for item in adapter.skipped],
    )


@router.post(
    "/adapters",
    response_model=AdapterSummary,
    status_code=201,
    summary="Teach (or upload) an adapter",
    dependencies=[RUNS_MODEL],
)
async def create_adapter(
    service: Service,
    name: Annotated[str, Form(description="1-64 letters, digits, '-' or '_'; an existing name is replaced.")],
    clips: Annotated[
        list[UploadFile] | None, File(description="Example clips; repeat the field once per clip.")
    ] = None,
    clip_labels: Annotated[
        list[str] | None, Form(description="The label of each clip, in the same order (repeat the field).")
    ] = None,
    negatives: Annotated[
        list[UploadFile] | None, File(description="Recordings of none of the labels (optional).")
    ] = None,
    method: Annotated[Literal["auto", "prototype", "tip", "probe"], Form()] = "auto",
    adapter: Annotated[
        UploadFile | None, File(description="An adapter file from `soundsift teach`, instead of clips.")
    ] = None,
    model: Annotated[
        str | None,
        Form(
            max_length=500,
            description=ONE_MODEL_HELP + " The adapter is taught on it, and classifying with the adapter then names "
            "it too. An uploaded adapter file must have been taught on it (without 'model': on any served model).",
        ),
    ] = None,
) -> AdapterSummary:
    if service.settings.max_adapters == 0:
        raise ApiError(403, "teaching_disabled", "this server does not store adapters (SOUNDSIFT_MAX_ADAPTERS=0)")
    if adapter is not None:
        if clips or negatives:
            raise ApiError(422, "invalid_request", "send an adapter file or clips, not both")
        return summary(await service.store_adapter(name, await adapter.read(), model=model))
    if not clips:
        raise ApiError(422, "invalid_request", "send example 'clips' with their 'clip_labels', or an 'adapter' file")
    labels = [label.strip() for label in clip_labels or []]
    if len(labels) != len(clips) or not all(labels):
        raise ApiError(
            422, "invalid_examples", f"{len(clips)} clips but {len(labels)} clip_labels: give one label per clip"
        )
    taught = await service.teach(
        name,
        [(upload_of(clip, index), label) for index, (clip, label) in enumerate(zip(clips, labels))],
        [upload_of(clip, len(clips) + index) for index, clip in enumerate(negatives or [])],
        method=method,
        model=model,
    )
    return summary(taught)


@router.get("/adapters", response_model=AdapterList, summary="The stored adapters")
async def list_adapters(service: Service) -> AdapterList:
    return AdapterList(adapters=[summary(service.adapters.get(name)) for name in service.adapters.names()])


@router.get(
    "/adapters/{name}",
    response_class=Response,
    summary="Download an adapter file",
    responses={200: {"content": {"application/octet-stream": {}}}},
)
async def download_adapter(service: Service, name: str) -> Response:
    adapter = service.adapters.get(name)
    return Response(
        adapter.to_bytes(),
        media_type="application/octet-stream",
        headers={"Content-Disposition": f'attachment; filename="{adapter.name}.adapter"'},
    )


@router.delete("/adapters/{name}", status_code=204, summary="Delete a stored adapter")
async def delete_adapter(service: Service, name: str) -> Response:
    service.adapters.delete(name)
    return Response(status_code=204)
