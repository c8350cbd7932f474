"""POST /v1/embeddings (and GET /v1/models): CLAP embeddings in the shape of OpenAI's embeddings
API, so clients written for it (the ``openai`` package, LangChain, vector-database loaders) can use
soundsift as their embedding server with only a base URL and key. The vectors live in CLAP's shared space: text
embedded here can be searched against audio from /api/embed/audio, and the other way round.

Audio follows Infinity (``infinity_emb``), the embedding server whose clients send it: the same
route with ``"modality": "audio"`` and a list of data URIs, or its older ``/embeddings_audio``
route. Only base64 data URIs are accepted: a URL is never fetched and a path never opened.

The same key, limits, admission and model engine as /api/embed/text and /api/embed/audio. Errors
are raised as everywhere in the API and answered in OpenAI's shape (serving.openai_errors).
``model`` picks a served model by name or checkpoint id; a server serving one model answers any
name with it (OpenAI's clients always send one), a server serving several answers an unknown
name with 404. The answer says which model embedded.
Token usage is not metered: the ``usage`` counts are 0."""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
import tempfile
from contextlib import ExitStack
from typing import IO, Annotated, BinaryIO, Literal, cast

import numpy as np
from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from soundsift.core.text import check_text
from soundsift.errors import AudioError
from soundsift.serving.dependencies import RUNS_MODEL, Service, check_file_count
from soundsift.serving.errors import ApiError, printable
from soundsift.serving.guards import describe_limit
from soundsift.serving.openai_errors import OPENAI_ERROR_RESPONSES
from soundsift.serving.service import ClassificationService, ServedModel, Upload

router = APIRouter(prefix="/v1", tags=["openai"], responses=OPENAI_ERROR_RESPONSES)
MAX_INPUTS = 1000
# What a data URI's header may be: an optional media type and parameters (Infinity's DataURI allows
# ``;name=`` and ``;charset=``), then ``;base64``. The decoder sniffs the content, not the type.
_DATA_URI_HEADER = re.compile(r"(?:[\w.+-]+/[\w.+-]+)?(?:;[\w.+-]+=[^;,]*)*;base64", re.ASCII)
_HEADER_LIMIT = 256
_URL = re.compile(r"[a-z][a-z0-9+.-]*:", re.IGNORECASE)
_WHITESPACE = re.compile(r"\s")
# Base64 is decoded this many characters at a time (a multiple of 4) into a file that moves to
# disk past _SPOOL_BYTES, so a clip never exists twice in memory beside its text.
_CHUNK_CHARS = 1 << 20
_SPOOL_BYTES = 1 << 20
URL_REFUSED = "URLs are never fetched and paths never opened; send the audio as a base64 data URI"


class EmbeddingsRequest(BaseModel):
    # Clients send fields soundsift has no use for (OpenAI's ``user``): accepted and ignored.
    model_config = ConfigDict(extra="ignore")

    input: Annotated[
        str | list[str],
        Field(
            description="Text: a text or a list of at most 1000, each embedded as given. Audio: a base64 "
            "data URI (data:audio/wav;base64,...) or a list of them, at most SOUNDSIFT_MAX_BATCH_FILES."
        ),
    ]
    model: str | None = Field(
        default=None,
        description="A served model (see /api/info); with one model served, any name is accepted and it answers.",
    )
    encoding_format: Literal["float", "base64"] = Field(
        default="float", description="float: lists of numbers; base64: little-endian float32 bytes, base64-encoded."
    )
    dimensions: int | None = Field(
        default=None, description="The model's own size (512) if given; 0, as Infinity's clients send, means unset."
    )
    modality: Literal["text", "audio"] = Field(
        default="text", description="As in Infinity: 'audio' embeds the inputs as audio data URIs."
    )


class AudioEmbeddingsRequest(EmbeddingsRequest):
    modality: Literal["text", "audio"] = Field(default="audio", description="Always audio on this route.")


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


class ModelCard(BaseModel):
    id: str = Field(description="The name a request's 'model' field uses for it.")
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "soundsift"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


@router.get("/models", response_model=ModelList, summary="The served models, OpenAI-compatible")
async def models(service: Service) -> ModelList:
    """OpenAI's model list, which embedding clients and RAG tools read to offer a model: each served
    model by the name ``model`` takes, the default first."""
    return ModelList(data=[ModelCard(id=served.name) for served in service.models.values()])


@router.post(
    "/embeddings",
    response_model=EmbeddingsResponse,
    summary="CLAP text or audio embeddings, OpenAI-compatible",
    dependencies=[RUNS_MODEL],
)
async def embeddings(service: Service, request: EmbeddingsRequest) -> EmbeddingsResponse:
    inputs = [request.input] if isinstance(request.input, str) else request.input
    served = _served(service, request.model)
    _check_dimensions(served, request.dimensions)
    if request.modality == "audio":
        vectors = await _embed_audio(service, inputs, served)
    else:
        vectors = await _embed_text(service, inputs, served)
    return EmbeddingsResponse(
        data=[
            Embedding(index=index, embedding=_encoded(vector, request.encoding_format))
            for index, vector in enumerate(vectors)
        ],
        model=served.classifier.model_id,
    )


@router.post(
    "/embeddings_audio",
    response_model=EmbeddingsResponse,
    summary="CLAP audio embeddings from data URIs (Infinity's route)",
    dependencies=[RUNS_MODEL],
)
async def embeddings_audio(service: Service, request: AudioEmbeddingsRequest) -> EmbeddingsResponse:
    """Infinity's ``/embeddings_audio``: the same as /v1/embeddings with ``"modality": "audio"``."""
    return await embeddings(service, request.model_copy(update={"modality": "audio"}))


def _served(service: ClassificationService, model: str | None) -> ServedModel:
    """The model a request names; with one model served, that model whatever the name."""
    if len(service.models) == 1:
        return service.default
    return service.served(model)


def _check_dimensions(served: ServedModel, dimensions: int | None) -> None:
    if dimensions and dimensions != served.classifier.dim:
        raise ApiError(
            422,
            "invalid_request",
            f"dimensions: this model's embeddings have {served.classifier.dim}, not {dimensions}",
        )


async def _embed_text(service: ClassificationService, texts: list[str], served: ServedModel) -> np.ndarray:
    if not 1 <= len(texts) <= MAX_INPUTS:
        raise ApiError(422, "invalid_request", f"input: give 1 to {MAX_INPUTS} texts, not {len(texts)}")
    limit = service.model_settings.max_label_chars
    for index, text in enumerate(texts):
        if len(text) > limit:
            raise ApiError(422, "text_too_long", f"input {index} is {len(text)} characters; the limit is {limit}")
        check_text(text, f"input {index}")
    return await service.embed_text(texts, model=served.name)


async def _embed_audio(service: ClassificationService, uris: list[str], served: ServedModel) -> np.ndarray:
    """Each data URI decoded to a (spooled) file, then embedded like /api/embed/audio's uploads: the
    same admission, decode workers, audio limits and engine. A bad input answers 400 naming it."""
    if not uris:
        raise ApiError(400, "invalid_request", "input: give at least one audio data URI")
    check_file_count(len(uris), service.settings.max_batch_files)
    max_bytes = int(service.settings.max_upload_mb * 2**20)
    with ExitStack() as files:
        opened = await asyncio.to_thread(_decoded_all, uris, max_bytes, files)
        uploads = [Upload.of(file, f"input {index}") for index, file in enumerate(opened)]
        try:
            return await service.embed_audio(uploads, model=served.name)
        except AudioError as error:  # the clip's own fault: OpenAI's and Infinity's 400, naming the input
            raise ApiError(400, error.code, printable(str(error))) from None


def _decoded_all(uris: list[str], max_bytes: int, files: ExitStack) -> list[BinaryIO]:
    opened: list[BinaryIO] = []
    total = 0
    for index, uri in enumerate(uris):
        file = files.enter_context(tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES))  # noqa: SIM115 (the stack closes it)
        total += decode_data_uri(uri, file, f"input {index}", budget=max_bytes - total, limit=max_bytes)
        file.seek(0)
        opened.append(cast(BinaryIO, file))  # as Starlette's upload files are: spooled, binary
    return opened


def decode_data_uri(uri: str, into: IO[bytes], name: str, *, budget: int, limit: int) -> int:
    """Write the bytes of a base64 data URI into ``into``; their count. Anything else (a URL, a
    path, a data URI without ;base64) is refused with 400 before anything is read or fetched, and a
    payload whose decoded size would pass ``budget`` (what is left of the request's ``limit``) with
    413 before any of it is decoded."""
    if not uri.startswith("data:"):
        what = "is a URL" if _URL.match(uri) else "is not a data URI"
        raise ApiError(400, "invalid_request", f"{name} {what}: {URL_REFUSED} (data:audio/wav;base64,...)")
    comma = uri.find(",", 0, _HEADER_LIMIT)
    if comma < 0 or not _DATA_URI_HEADER.fullmatch(uri, 5, comma):
        raise ApiError(
            400, "invalid_request", f"{name}: a data URI must be base64: data:audio/wav;base64,... ({URL_REFUSED})"
        )
    start = comma + 1
    encoded = len(uri) - start
    if encoded == 0:
        raise ApiError(400, "invalid_request", f"{name}: the data URI holds no data")
    size = encoded // 4 * 3 - (2 if uri.endswith("==") else 1 if uri.endswith("=") else 0)
    if size > budget:
        raise ApiError(
            413,
            "upload_too_large",
            f"{name}: {size:,} bytes of audio would pass the limit for all of a request's audio, "
            f"{describe_limit(limit)}",
        )
    if _WHITESPACE.search(uri, start):
        raise ApiError(400, "invalid_request", f"{name}: invalid base64: spaces or line breaks in the data")
    written = 0
    for offset in range(start, len(uri), _CHUNK_CHARS):
        try:
            chunk = base64.b64decode(uri[offset : offset + _CHUNK_CHARS], validate=True)
        except (binascii.Error, ValueError) as error:
            raise ApiError(400, "invalid_request", f"{name}: invalid base64 ({error})") from None
        into.write(chunk)
        written += len(chunk)
    return written


def _encoded(vector: np.ndarray, encoding: str) -> list[float] | str:
    if encoding == "base64":
        return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")
    return [float(x) for x in vector]
