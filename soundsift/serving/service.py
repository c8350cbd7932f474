"""The serving core shared by the HTTP API and the web page: one model engine, admission, a bounded
worker pool, shutdown, metrics. Both front ends call these coroutines; decoding, scoring and
detection themselves are the library's own (soundsift.core.pipeline, soundsift.detection).

One engine runs the model: the replicas (one per device) sit behind a `ModelEngine` that batches
audio with audio and text with text from every caller. The service's `classifier` embeds through
that engine, so label texts, search queries, indexing, teaching and adapter fingerprints take the
same queue as classification; nothing else calls the model.

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
from typing import Any, BinaryIO, Literal, TypeVar

import numpy as np

from soundsift.backends import Backend
from soundsift.core.adapter import Adapter
from soundsift.core.audio import AudioInput
from soundsift.core.classifier import Classifier, load_settings_backend
from soundsift.core.engine import ModelEngine
from soundsift.core.fitting import Method
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
from soundsift.errors import ClientGoneError, ConfigurationError, ExamplesError, QueueFullError, ServiceStoppingError
from soundsift.optional import ONNXRUNTIME, TORCH
from soundsift.serving.adapters import AdapterStore, check_name
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


class ClassificationService:
    """The model engine and its classifier, with async entry points for the front ends."""

    def __init__(self, model: ModelSettings, server: ServerSettings, backends: Sequence[Backend]) -> None:
        self.model_settings = model
        self.settings = server
        self.backends = list(backends)
        self.metrics = Metrics()
        self.engine = ModelEngine(
            [LocalEmbedder(backend, server.micro_batch_size) for backend in self.backends],
            max_batch_size=server.micro_batch_size,
            max_wait_s=server.micro_batch_wait_ms / 1000.0,
            # Admission (below) already bounds the clips in flight; this is a second fence.
            max_queue=2 * server.max_queue,
            observer=self.metrics.observe_batch,
        )
        self.engine.start()
        try:
            self.classifier = Classifier(model, loaded_backend=self.backends[0], embedder=self.engine)
        except BaseException:
            self.engine.close()
            raise
        self._workers = ThreadPoolExecutor(server.decode_workers, thread_name_prefix="soundsift-work")
        self.adapters = AdapterStore(server.adapter_dir, limit=server.max_adapters)
        self._admitted = 0
        self._deadline = asyncio.Event()
        self.ready = False
        self.draining = False
        self.metrics.queue_depth.set_function(lambda: self.engine.depth)
        self.metrics.admitted.set_function(lambda: self._admitted)

    @classmethod
    def load(cls, model: ModelSettings, server: ServerSettings) -> ClassificationService:
        replicas = replica_layout(model, server)  # refused here, before any model is loaded
        return cls(
            model,
            server,
            [load_settings_backend(model.with_overrides(threads=r.threads), device=r.device) for r in replicas],
        )

    @property
    def devices(self) -> list[str]:
        return [backend.device for backend in self.backends]

    async def start(self) -> None:
        await self.warm_up()
        await self.in_worker_pool(self.adapters.load_saved, self.classifier.checked_adapter)
        self.ready = True

    async def stop(self) -> None:
        self.ready = False
        self.draining = True
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self.engine.close)
        await loop.run_in_executor(None, self._workers.shutdown)
        self.adapters.close()

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
        """One clip and one text on every replica, so first requests don't pay one-off costs."""
        one_second = (np.zeros(self.classifier.sample_rate, dtype=np.float32), self.classifier.sample_rate)
        features = await self.in_worker_pool(self.classifier.pipeline.decode_input, one_second)
        assert features.features is not None
        await self.in_worker_pool(self.engine.warm_up, [features.features], ["speech", "music"])

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
        self, labels: str | Sequence[str] | None, options: ScoringOptions, adapter: str | None = None
    ) -> PreparedLabels:
        """The request's labels prepared with its options, with the taught labels of the stored
        ``adapter`` named (or of the server's own ``--adapter``). Per-label thresholds are checked
        against them where they are used (`classify_many`)."""
        chosen = self.adapters.get(adapter) if adapter else None
        return await self.in_worker_pool(
            self.classifier.prepare_labels,
            labels,
            templates=options.templates,
            multi_label=options.multi_label,
            adapter=chosen,
        )

    async def teach(
        self,
        name: str,
        clips: Sequence[tuple[Upload, str]],
        negatives: Sequence[Upload],
        *,
        method: Method | Literal["auto"] = "auto",
    ) -> Adapter:
        """Teach an adapter from uploaded clips and store it under ``name``. The clips go through the
        same admission, worker pool and engine as classification; fitting runs in the pool."""
        check_name(name)
        if len(clips) + len(negatives) > self.settings.max_teach_clips:
            raise ExamplesError(
                f"{len(clips) + len(negatives)} clips; the limit is {self.settings.max_teach_clips} "
                "(SOUNDSIFT_MAX_TEACH_CLIPS)"
            )
        inputs = [(upload.file, upload.name) for upload, _ in clips] + [(u.file, u.name) for u in negatives]
        async with self.admit(len(inputs)):
            _, outcomes = await self._before_deadline(self._decode_and_embed(inputs))
            adapter = await self.in_worker_pool(
                Adapter.from_outcomes,
                self.classifier,
                [label for _, label in clips],
                outcomes,
                sources=[name for _, name in inputs],
                method=method,
                name=name,
            )
        return await self.in_worker_pool(self.adapters.put, name, adapter)

    async def store_adapter(self, name: str, data: bytes) -> Adapter:
        """An uploaded adapter file, checked against the served model, stored under ``name``."""
        adapter = await self.in_worker_pool(Adapter.from_bytes, data, name=name, source="the uploaded adapter")
        # The model's fingerprint is computed on first use (a model call): never on the event loop.
        await self.in_worker_pool(self.classifier.checked_adapter, adapter)
        return await self.in_worker_pool(self.adapters.put, name, adapter)

    async def classify(self, upload: Upload, prepared: PreparedLabels, options: ScoringOptions) -> Classification:
        """One upload; its error is raised (the API answers it with the matching status)."""
        (result,) = await self.classify_many([upload], prepared, options, raise_errors=True)
        assert isinstance(result, Classification)
        return result

    async def classify_many(
        self,
        uploads: Sequence[Upload],
        prepared: PreparedLabels,
        options: ScoringOptions,
        *,
        raise_errors: bool = False,
    ) -> list[Classification | FailedInput]:
        """Classify uploads with the pipeline's decode and scoring steps, embedding through the
        engine; a bad upload becomes a FailedInput in its place."""
        inputs = [(upload.file, upload.name) for upload in uploads]
        return await self._classify(inputs, prepared, options, raise_errors)

    async def classify_samples(
        self, samples: np.ndarray, sample_rate: int, prepared: PreparedLabels, options: ScoringOptions
    ) -> Classification:
        """Audio already in memory (the page's live microphone), under the same admission and engine."""
        (result,) = await self._classify([((samples, sample_rate), "live")], prepared, options, True)
        assert isinstance(result, Classification)
        return result

    async def _classify(
        self,
        inputs: Sequence[tuple[AudioInput, str]],
        prepared: PreparedLabels,
        options: ScoringOptions,
        raise_errors: bool,
    ) -> list[Classification | FailedInput]:
        check_label_thresholds(prepared, options.label_thresholds)
        pipeline = self.classifier.pipeline
        decision = pipeline.decision(options)
        async with self.admit(len(inputs)):
            decoded, outcomes = await self._before_deadline(self._decode_and_embed(inputs))
        results = []
        for item, outcome in zip(decoded, outcomes, strict=True):
            scored = pipeline.scored(item, outcome, prepared, decision)
            if scored.error is not None and raise_errors:
                raise scored.error
            results.append(scored.result)
        return results

    async def embed_audio(self, uploads: Sequence[Upload]) -> np.ndarray:
        """(N, D) unit embeddings, one per upload; the first bad upload's error is raised."""
        inputs = [(upload.file, upload.name) for upload in uploads]
        async with self.admit(len(inputs)):
            _, outcomes = await self._before_deadline(self._decode_and_embed(inputs))
        return embeddings_or_raise(outcomes)

    async def embed_text(self, texts: Sequence[str]) -> np.ndarray:
        async with self.admit():
            return await self._before_deadline(self.in_worker_pool(self.classifier.embed_text, list(texts)))

    async def detect(
        self,
        upload: Upload,
        labels: str | Sequence[str] | None,
        options: DetectOptions,
        *,
        disconnected: Callable[[], Awaitable[bool]],
        adapter: str | None = None,
    ) -> Detection:
        """Sound events in a recording: the library's own detection, run on the worker pool with the
        engine's classifier, under admission; it stops when the client goes away."""
        chosen = self.adapters.get(adapter) if adapter else None
        stop = threading.Event()

        def run() -> Detection:
            return DetectionRun(
                self.classifier,
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
        self, inputs: Sequence[tuple[AudioInput, str]]
    ) -> tuple[list[DecodedInput], list[Outcome]]:
        """Every input decoded in parallel on the worker pool, then embedded through the engine:
        per input, its decoding error or its embedding's outcome."""
        decoded = list(
            await asyncio.gather(
                *(
                    self.in_worker_pool(self.classifier.pipeline.decode_input, audio, index=index, source=name)
                    for index, (audio, name) in enumerate(inputs)
                )
            )
        )
        ready = ready_features(decoded)
        return decoded, merge_outcomes(decoded, await self.engine.embed_audio_async(ready) if ready else [])


def elapsed_ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000.0, 2)
