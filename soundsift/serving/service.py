"""The serving core shared by the HTTP API and the web page: one model engine, admission, a bounded
worker pool, shutdown, metrics. Both front ends call these coroutines; decoding, scoring and
detection themselves are the library's own (soundsift.core.pipeline, soundsift.detection).

One engine runs each served model: its replicas (one per device) sit behind a `ModelEngine` that
batches audio with audio and text with text from every caller. Each `ServedModel`'s classifier
embeds through its engine, so label texts, search queries, indexing, teaching and adapter
fingerprints take the same queue as classification; nothing else calls the model. With several
models (``--model fused --model general``) a request's ``model`` picks one, or several joined by '+'
as an ensemble (soundsift.core.ensemble); the CPU models' engines share one gate, so their calls
take turns on the cores.

Work is bounded by design:
- a request first takes a place among ``max_queue`` admitted requests (503 at once when none is
  free) and only then is decoded, on ``decode_workers`` worker threads, so at most that many inputs
  are ever decoded at once, each within the model settings' audio limits; the same pool runs the
  other blocking work (files, the adapter store, the index), which waits on the engine for the model;
- decoded inputs wait for the model as features (about 1 MB each), never as audio;
- on shutdown, work that has not reached the model by the grace deadline is answered with 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import io
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal, TypeVar

import numpy as np

from soundsift.backends import Backend
from soundsift.core.adapter import Adapter
from soundsift.core.audio import AudioInput
from soundsift.core.classifier import Classifier, load_settings_backend
from soundsift.core.engine import ModelEngine
from soundsift.core.ensemble import EnsembleLabels, ensemble_members, ensemble_scored
from soundsift.core.fitting import Method
from soundsift.core.gallery import GALLERY, resolve_model
from soundsift.core.pipeline import (
    DecodedInput,
    LocalEmbedder,
    Outcome,
    embeddings_or_raise,
    merge_outcomes,
    ready_features,
)
from soundsift.core.results import Classification, FailedInput
from soundsift.core.scoring import PreparedLabels, ScoringOptions, check_label_thresholds
from soundsift.core.settings import ModelSettings
from soundsift.detection.results import Detection
from soundsift.detection.windows import DetectionRun, DetectOptions
from soundsift.errors import (
    AdapterError,
    ClientGoneError,
    ConfigurationError,
    ExamplesError,
    OptionsError,
    QueueFullError,
    ServiceStoppingError,
    UnknownModelError,
)
from soundsift.optional import ONNXRUNTIME, TORCH
from soundsift.serving.adapters import AdapterStore, check_name
from soundsift.serving.memory import ModelFootprint, check_memory, weights_mb
from soundsift.serving.metrics import Metrics
from soundsift.serving.settings import ServerSettings

# Unfinished requests are answered this long before uvicorn's graceful timeout ends, so the 503 is sent.
SHUTDOWN_ANSWER_MARGIN_S = 0.5
# How often a running detection asks whether its client is still there.
DISCONNECT_POLL_S = 0.25
Result = TypeVar("Result")


def replica_devices(model: ModelSettings, server: ServerSettings) -> list[str]:
    """Devices to load a model replica on: from --gpus when given, else --device."""
    if server.gpus is None or server.gpus == "none":
        return [model.device if server.gpus is None else "cpu"]
    if server.gpus != "all":
        return [f"cuda:{int(part)}" for part in server.gpus.split(",")]
    torch = TORCH.require("--gpus all (counting the GPUs)")
    available = torch.cuda.device_count()
    if available == 0:
        raise ConfigurationError(f"--gpus {server.gpus} was asked for but no CUDA GPU is available")
    return [f"cuda:{index}" for index in range(available)]


@dataclass(frozen=True)
class Replica:
    """Where one model replica runs, and its intra-op threads (None: the backend's own default)."""

    device: str
    threads: int | None


def replica_layout(model: ModelSettings, server: ServerSettings, cores: int | None = None) -> list[Replica]:
    """``server.replicas`` replicas on each device of `replica_devices`. On a CPU, the onnx backend's
    replicas share the physical cores: each gets ``model.threads`` threads, or by default an equal
    share; more threads than cores in all is refused unless ``server.oversubscribe``, because each
    ONNX Runtime session keeps its own pool of spinning threads and two pools on one core take turns."""
    from soundsift.backends.onnx.runtime import physical_cores

    devices = replica_devices(model, server)
    cores = cores or physical_cores()
    on_cpu = server.replicas * sum(_runs_on_cpu(device, model.backend) for device in devices)
    threads = model.threads
    if on_cpu and model.backend == "onnx":
        threads = threads or max(1, cores // on_cpu)
        if on_cpu * threads > cores and not server.oversubscribe:
            raise ConfigurationError(
                f"{on_cpu} CPU replicas x {threads} threads = {on_cpu * threads} intra-op threads on {cores} physical "
                "cores: the replicas' thread pools would take turns on the same cores and every call would slow "
                "down; lower --replicas or --threads, or pass --oversubscribe to run it anyway"
            )
    elif on_cpu > 1 and not server.oversubscribe:
        raise ConfigurationError(
            f"{on_cpu} CPU replicas of the torch backend would share one process-wide thread pool of "
            f"{cores} threads; use --backend onnx (each replica then gets its own threads) or pass --oversubscribe"
        )
    return [Replica(device, threads) for device in devices for _ in range(server.replicas)]


def _runs_on_cpu(device: str, backend: str) -> bool:
    if device != "auto":
        return device == "cpu"
    if backend == "onnx":
        return not ONNXRUNTIME.available() or "CUDAExecutionProvider" not in (
            ONNXRUNTIME.require("the onnx backend").get_available_providers()
        )
    return not TORCH.available() or not TORCH.require("the torch backend").cuda.is_available()


@dataclass(frozen=True)
class Upload:
    """One uploaded file: a seekable binary file (Starlette spools large uploads to disk, and the
    decoder reads from there, never holding the whole upload in memory) and the client's name for it."""

    file: BinaryIO
    name: str

    @classmethod
    def of(cls, file: BinaryIO, name: str) -> Upload:
        return cls(_AbandonableFile(file), name)  # type: ignore[arg-type]


class _AbandonableFile(io.RawIOBase):
    """A request's upload as a decode thread reads it. When the request is answered first (a 503 at
    the shutdown deadline), the web framework closes the file under the thread; reads then end the
    file quietly instead of raising inside libsndfile's callbacks, and the thread's work is dropped."""

    def __init__(self, raw: BinaryIO) -> None:
        super().__init__()
        self._raw = raw

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        try:
            return self._raw.readinto(buffer)  # type: ignore[attr-defined]
        except ValueError:  # closed underneath
            return 0

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        try:
            return self._raw.seek(offset, whence)
        except ValueError:
            return 0

    def tell(self) -> int:
        try:
            return self._raw.tell()
        except ValueError:
            return 0


@dataclass(frozen=True)
class ServedModel:
    """One model the server serves: the name requests use for it, its settings, and the classifier
    embedding through its engine (its replicas)."""

    name: str
    settings: ModelSettings
    engine: ModelEngine
    classifier: Classifier
    devices: list[str]


@dataclass(frozen=True)
class RequestLabels:
    """A request's labels prepared for the model it chose: one served model, or the members of an
    ensemble, each with the labels embedded by its own text encoder."""

    models: list[ServedModel]
    labels: list[PreparedLabels]

    @property
    def names(self) -> list[str]:
        return self.labels[0].names

    @property
    def warnings(self) -> list[str]:
        return self.labels[0].warnings


def served_name(model: str) -> str:
    """The name requests use for a served model: its gallery alias, a folder's own name, else the
    hub id as given (no server path is ever shown to clients)."""
    for card in GALLERY:
        if model in (card.alias, card.hub_id):
            return card.alias
    local = Path(model).expanduser()
    return local.resolve().name if local.is_dir() else model


def served_model_settings(model: ModelSettings, server: ServerSettings) -> list[ModelSettings]:
    """Each served model's settings: the model settings with each of ``server.models`` in turn (just
    the model setting when none are listed)."""
    return [model.with_overrides(model=name) for name in server.models] if server.models else [model]


class ClassificationService:
    """The models' engines and classifiers, with async entry points for the front ends."""

    def __init__(
        self, models: Sequence[tuple[ModelSettings, Sequence[Backend]]], server: ServerSettings, *, names: Sequence[str]
    ) -> None:
        self.settings = server
        self.metrics = Metrics()
        cpu_gate = threading.Semaphore(server.replicas)  # CPU models take turns on the cores
        self.models: dict[str, ServedModel] = {}
        try:
            for name, (settings, backends) in zip(names, models, strict=True):
                self.models[name] = self._served(name, settings, list(backends), cpu_gate)
        except BaseException:
            self._close_engines()
            raise
        self.default = next(iter(self.models.values()))
        self._workers = ThreadPoolExecutor(server.decode_workers, thread_name_prefix="soundsift-work")
        self.adapters = AdapterStore(server.adapter_dir, limit=server.max_adapters)
        self._admitted = 0
        self._deadline = asyncio.Event()
        self.ready = False
        self.draining = False
        self.memory_estimate_mb: float | None = None
        """What `load` estimated the models need (soundsift.serving.memory), MB."""
        self.metrics.queue_depth.set_function(lambda: sum(served.engine.depth for served in self.models.values()))
        self.metrics.admitted.set_function(lambda: self._admitted)

    def _served(
        self, name: str, settings: ModelSettings, backends: list[Backend], cpu_gate: threading.Semaphore
    ) -> ServedModel:
        server = self.settings
        # A backend that runs the audio encoder a few clips at a time anyway (onnx on a CPU: one) gets
        # batches of that size, so a text (a label set, a search query) waits for one clip's run at
        # most, never for a whole batch; its throughput is the same.
        audio_batch = min(server.micro_batch_size, backends[0].clips_per_call or server.micro_batch_size)
        engine = ModelEngine(
            [LocalEmbedder(backend, server.micro_batch_size) for backend in backends],
            max_batch_size=audio_batch,
            max_wait_s=server.micro_batch_wait_ms / 1000.0,
            # Admission (below) already bounds the clips in flight; this is a second fence.
            max_queue=2 * server.max_queue,
            observer=self.metrics.observe_batch,
            gate=cpu_gate if all(backend.device == "cpu" for backend in backends) else None,
        )
        engine.start()
        try:
            classifier = Classifier(settings, loaded_backend=backends[0], embedder=engine)
        except BaseException:
            engine.close()
            raise
        return ServedModel(name, settings, engine, classifier, [backend.device for backend in backends])

    @classmethod
    def load(cls, model: ModelSettings, server: ServerSettings) -> ClassificationService:
        """Every served model's replicas, after the layout and the memory estimate are checked (both
        refused here, before any model is loaded)."""
        served = served_model_settings(model, server)
        names = [served_name(name) for name in (server.models or [model.model])]
        if len(set(names)) != len(names):
            raise ConfigurationError(f"two served models share a name ({', '.join(names)}); give each its own folder")
        layouts = [replica_layout(settings, server) for settings in served]
        estimate_mb = check_memory(
            [
                ModelFootprint(name, sum(replica.device == "cpu" for replica in layout), weights_mb(settings))
                for name, settings, layout in zip(names, served, layouts, strict=True)
            ],
            server.memory_limit_mb,
        )
        loaded = [
            (
                settings,
                [load_settings_backend(settings.with_overrides(threads=r.threads), device=r.device) for r in layout],
            )
            for settings, layout in zip(served, layouts, strict=True)
        ]
        service = cls(loaded, server, names=names)
        service.memory_estimate_mb = estimate_mb
        return service

    @property
    def classifier(self) -> Classifier:
        """The default model's classifier (the first served)."""
        return self.default.classifier

    @property
    def model_settings(self) -> ModelSettings:
        return self.default.settings

    @property
    def devices(self) -> list[str]:
        return [device for served in self.models.values() for device in served.devices]

    def served(self, model: str | None = None) -> ServedModel:
        """The served model a request names (its name, alias or checkpoint id; None: the default);
        UnknownModelError for any other, OptionsError for an ensemble where one model is needed."""
        chosen = self.chosen(model)
        if len(chosen) > 1:
            raise OptionsError(f"{model!r} is an ensemble; this takes one model ({', '.join(self.models)})")
        return chosen[0]

    def chosen(self, model: str | None = None) -> list[ServedModel]:
        """The served models a request's ``model`` names: one, or an ensemble's members ('a+b')."""
        if model is None or not model.strip():
            return [self.default]
        return [self._lookup(name) for name in ensemble_members(model.strip(), folders=False)]

    def _lookup(self, name: str) -> ServedModel:
        """Matched against the served models' names and ids only: a request never reaches the disk."""
        hub_id = resolve_model(name)
        for served in self.models.values():
            if name in (served.name, served.classifier.model_id) or hub_id == served.settings.model:
                return served
        raise UnknownModelError(f"this server serves {', '.join(self.models)}; not {name[:100]!r}")

    async def start(self) -> None:
        await self.warm_up()
        await self.in_worker_pool(self.adapters.load_saved, self.checked_adapter)
        self.ready = True

    async def stop(self) -> None:
        self.ready = False
        self.draining = True
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._close_engines)
        await loop.run_in_executor(None, self._workers.shutdown)
        self.adapters.close()

    def _close_engines(self) -> None:
        for served in self.models.values():
            served.engine.close()

    def begin_shutdown(self) -> None:
        """SIGTERM: refuse new work at once; at the grace deadline (shortly before uvicorn stops
        waiting) answer every request still in progress with 503 instead of a dropped connection."""
        self.draining = True
        self.ready = False
        asyncio.get_running_loop().call_later(
            max(0.0, self.settings.graceful_timeout_s - SHUTDOWN_ANSWER_MARGIN_S), self._deadline.set
        )

    async def _before_deadline(self, work: Awaitable[Result]) -> Result:
        """The work's result, or ServiceStoppingError if the shutdown deadline comes first."""
        task = asyncio.ensure_future(work)
        deadline = asyncio.ensure_future(self._deadline.wait())
        try:
            await asyncio.wait({task, deadline}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            deadline.cancel()
        if task.done():
            return task.result()
        task.cancel()
        raise ServiceStoppingError("the server is shutting down; retry on another replica")

    async def warm_up(self) -> None:
        """One clip and one text on every replica of every model, so first requests don't pay
        one-off costs."""
        for served in self.models.values():
            rate = served.classifier.sample_rate
            features = await self.in_worker_pool(
                served.classifier.pipeline.decode_input, (np.zeros(rate, np.float32), rate)
            )
            assert features.features is not None
            await self.in_worker_pool(served.engine.warm_up, [features.features], ["speech", "music"])

    def checked_adapter(self, adapter: Adapter) -> Adapter:
        """The adapter, if one of the served models taught it (AdapterMismatchError from the default
        model otherwise). Model calls: run it on the worker pool."""
        for served in [*self.models.values()][1:]:
            with contextlib.suppress(AdapterError):
                return served.classifier.checked_adapter(adapter)
        return self.classifier.checked_adapter(adapter)

    @property
    def full(self) -> bool:
        """No place is free: new model requests are refused before their body is even read."""
        return self.draining or self._admitted >= self.settings.max_queue

    @contextlib.asynccontextmanager
    async def admit(self, places: int = 1) -> AsyncIterator[None]:
        """``places`` of the ``max_queue`` places (one per clip a request can have waiting for the
        model at once), or QueueFullError at once (503 with Retry-After). A request larger than the
        whole queue is admitted alone, when nothing else is in flight."""
        if self.draining:
            raise ServiceStoppingError("the server is shutting down")
        places = min(places, self.settings.max_queue)
        if self._admitted + places > self.settings.max_queue:
            raise QueueFullError(f"{self._admitted} of {self.settings.max_queue} places are taken")
        self._admitted += places
        try:
            yield
        finally:
            self._admitted -= places

    async def in_worker_pool(self, function: Callable[..., Result], *args: Any, **kwargs: Any) -> Result:
        """Run blocking work (decoding, files, the index; model calls wait on the engine) on the
        bounded worker pool, off the event loop."""
        call = functools.partial(function, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self._workers, call)

    async def prepare_labels(
        self,
        labels: str | Sequence[str] | None,
        options: ScoringOptions,
        adapter: str | None = None,
        *,
        model: str | None = None,
    ) -> RequestLabels:
        """The request's labels prepared with its options for the ``model`` it names (default: the
        first served; 'a+b': an ensemble, each member embedding them), with the taught labels of the
        stored ``adapter`` named (or of the server's own ``--adapter``). Per-label thresholds are
        checked against them where they are used (`classify_many`)."""
        models = self.chosen(model)
        if adapter and len(models) > 1:
            raise OptionsError("an adapter is taught on one model; an ensemble takes zero-shot labels only")
        chosen = self.adapters.get(adapter) if adapter else None
        prepared = [
            await self.in_worker_pool(
                served.classifier.prepare_labels,
                labels,
                templates=options.templates,
                multi_label=options.multi_label,
                adapter=chosen,
            )
            for served in models
        ]
        return RequestLabels(models, prepared)

    async def teach(
        self,
        name: str,
        clips: Sequence[tuple[Upload, str]],
        negatives: Sequence[Upload],
        *,
        method: Method | Literal["auto"] = "auto",
        model: str | None = None,
    ) -> Adapter:
        """Teach an adapter for the ``model`` named (default: the first served) from uploaded clips
        and store it under ``name``. The clips go through the same admission, worker pool and engine
        as classification; fitting runs in the pool."""
        check_name(name)
        served = self.served(model)
        if len(clips) + len(negatives) > self.settings.max_teach_clips:
            raise ExamplesError(
                f"{len(clips) + len(negatives)} clips; the limit is {self.settings.max_teach_clips} "
                "(SOUNDSIFT_MAX_TEACH_CLIPS)"
            )
        inputs = [(upload.file, upload.name) for upload, _ in clips] + [(u.file, u.name) for u in negatives]
        async with self.admit(len(inputs)):
            _, outcomes = await self._before_deadline(self._decode_and_embed(inputs, served))
            adapter = await self.in_worker_pool(
                Adapter.from_outcomes,
                served.classifier,
                [label for _, label in clips],
                outcomes,
                sources=[name for _, name in inputs],
                method=method,
                name=name,
            )
        return await self.in_worker_pool(self.adapters.put, name, adapter)

    async def store_adapter(self, name: str, data: bytes, *, model: str | None = None) -> Adapter:
        """An uploaded adapter file, checked against the ``model`` named (any served model when None:
        the one that taught it), stored under ``name``."""
        served = self.served(model) if model is not None else None
        adapter = await self.in_worker_pool(Adapter.from_bytes, data, name=name, source="the uploaded adapter")
        # The model's fingerprint is computed on first use (a model call): never on the event loop.
        if served is not None:
            await self.in_worker_pool(served.classifier.checked_adapter, adapter)
        else:
            await self.in_worker_pool(self.checked_adapter, adapter)
        return await self.in_worker_pool(self.adapters.put, name, adapter)

    async def classify(self, upload: Upload, prepared: RequestLabels, options: ScoringOptions) -> Classification:
        """One upload; its error is raised (the API answers it with the matching status)."""
        (result,) = await self.classify_many([upload], prepared, options, raise_errors=True)
        assert isinstance(result, Classification)
        return result

    async def classify_many(
        self,
        uploads: Sequence[Upload],
        prepared: RequestLabels,
        options: ScoringOptions,
        *,
        raise_errors: bool = False,
    ) -> list[Classification | FailedInput]:
        """Classify uploads with the pipeline's decode and scoring steps, embedding through the
        chosen models' engines; a bad upload becomes a FailedInput in its place."""
        inputs = [(upload.file, upload.name) for upload in uploads]
        return await self._classify(inputs, prepared, options, raise_errors)

    async def classify_samples(
        self, samples: np.ndarray, sample_rate: int, prepared: RequestLabels, options: ScoringOptions
    ) -> Classification:
        """Audio already in memory (the page's live microphone), under the same admission and engine."""
        (result,) = await self._classify([((samples, sample_rate), "live")], prepared, options, True)
        assert isinstance(result, Classification)
        return result

    async def _classify(
        self,
        inputs: Sequence[tuple[AudioInput, str]],
        prepared: RequestLabels,
        options: ScoringOptions,
        raise_errors: bool,
    ) -> list[Classification | FailedInput]:
        check_label_thresholds(prepared.labels[0], options.label_thresholds)
        pipelines = [served.classifier.pipeline for served in prepared.models]
        decision = pipelines[0].decision(options)
        async with self.admit(len(inputs) * len(pipelines)):
            decoded, outcomes = await self._before_deadline(self._decode_and_embed_for(inputs, prepared.models))
        results = []
        for position in range(len(inputs)):
            items, embedded = [each[position] for each in decoded], [each[position] for each in outcomes]
            scored = (
                pipelines[0].scored(items[0], embedded[0], prepared.labels[0], decision)
                if len(pipelines) == 1
                else ensemble_scored(pipelines, items, embedded, EnsembleLabels(prepared.labels), decision)
            )
            if scored.error is not None and raise_errors:
                raise scored.error
            results.append(scored.result)
        return results

    async def embed_audio(self, uploads: Sequence[Upload], *, model: str | None = None) -> np.ndarray:
        """(N, D) unit embeddings by the ``model`` named, one per upload; the first bad upload's error is raised."""
        served = self.served(model)
        inputs = [(upload.file, upload.name) for upload in uploads]
        async with self.admit(len(inputs)):
            _, outcomes = await self._before_deadline(self._decode_and_embed(inputs, served))
        return embeddings_or_raise(outcomes)

    async def embed_text(self, texts: Sequence[str], *, model: str | None = None) -> np.ndarray:
        served = self.served(model)
        async with self.admit():
            return await self._before_deadline(self.in_worker_pool(served.classifier.embed_text, list(texts)))

    async def detect(
        self,
        upload: Upload,
        labels: str | Sequence[str] | None,
        options: DetectOptions,
        *,
        disconnected: Callable[[], Awaitable[bool]],
        adapter: str | None = None,
        model: str | None = None,
    ) -> Detection:
        """Sound events in a recording: the library's own detection, run on the worker pool with the
        ``model``'s classifier (default: the first served), under admission; it stops when the
        client goes away."""
        served = self.served(model)
        chosen = self.adapters.get(adapter) if adapter else None
        stop = threading.Event()

        def run() -> Detection:
            return DetectionRun(
                served.classifier,
                upload.file,
                labels,
                options,
                adapter=chosen,
                source=upload.name,
                max_duration_s=self.settings.max_detect_duration_s,
                max_windows=self.settings.max_detect_windows,
            ).run(stop=stop)

        async def watch() -> None:
            while not await disconnected():
                await asyncio.sleep(DISCONNECT_POLL_S)
            stop.set()

        async with self.admit(self.settings.micro_batch_size):
            watcher = asyncio.ensure_future(watch())
            try:
                detection = await self._before_deadline(self.in_worker_pool(run))
            except Exception:
                if stop.is_set():
                    raise ClientGoneError("the client disconnected") from None
                raise
            finally:
                stop.set()  # the run ends at its next batch when the answer went out first (shutdown)
                watcher.cancel()
        self.metrics.observe_detection(len(detection.windows), detection.gated_windows)
        return detection

    async def _decode_and_embed(
        self, inputs: Sequence[tuple[AudioInput, str]], served: ServedModel
    ) -> tuple[list[DecodedInput], list[Outcome]]:
        """`_decode_and_embed_for` one model."""
        decoded, outcomes = await self._decode_and_embed_for(inputs, [served])
        return decoded[0], outcomes[0]

    async def _decode_and_embed_for(
        self, inputs: Sequence[tuple[AudioInput, str]], models: Sequence[ServedModel]
    ) -> tuple[list[list[DecodedInput]], list[list[Outcome]]]:
        """Every input decoded once, in parallel on the worker pool, and featurized for each of the
        ``models``, then embedded through each model's engine (the models at once): per model, per
        input, its decoding error or its embedding's outcome."""
        pipelines = [served.classifier.pipeline for served in models]
        per_input = await asyncio.gather(
            *(
                self.in_worker_pool(pipelines[0].decode_input_for, pipelines, audio, index=index, source=name)
                for index, (audio, name) in enumerate(inputs)
            )
        )
        decoded = [[item[member] for item in per_input] for member in range(len(models))]
        embedded = await asyncio.gather(
            *(self._embedded(served.engine, items) for served, items in zip(models, decoded, strict=True))
        )
        return decoded, list(embedded)

    @staticmethod
    async def _embedded(engine: ModelEngine, decoded: list[DecodedInput]) -> list[Outcome]:
        """The decoded clips embedded, sent to the engine in parts of half its queue: a request may
        hold more clips than the queue (teaching takes up to 256, the queue 128), and sent whole it
        was refused as an overload however idle the server was."""
        ready = ready_features(decoded)
        part = max(1, engine.max_queue // 2)
        outcomes: list[Outcome] = []
        for start in range(0, len(ready), part):
            outcomes += await engine.embed_audio_async(ready[start : start + part])
        return merge_outcomes(decoded, outcomes)


def elapsed_ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000.0, 2)
