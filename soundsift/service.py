"""The serving core shared by the HTTP API and the web page: model replicas, micro-batching,
metrics. Both front ends call these coroutines; scoring itself stays in soundsift.Classifier."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.concurrency import run_in_threadpool

from soundsift.audio import AudioInput, describe_source
from soundsift.batching import MicroBatcher
from soundsift.classifier import Classifier, PreparedLabels, failed_input
from soundsift.config import Settings
from soundsift.errors import ConfigurationError, SoundsiftError
from soundsift.results import Classification, Detection, FailedInput

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


@dataclass
class Metrics:
    """Prometheus metrics in a registry of their own (one per app)."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.requests = Counter(
            "soundsift_requests",
            "HTTP requests by endpoint and status.",
            ["endpoint", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "soundsift_request_seconds",
            "HTTP request latency by endpoint and status.",
            ["endpoint", "status"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.queue_depth = Gauge("soundsift_queue_depth", "Clips waiting for the model.", registry=self.registry)
        self.batch_size = Histogram(
            "soundsift_batch_size", "Clips per model call.", buckets=(1, 2, 4, 8, 16, 32, 64), registry=self.registry
        )
        self.inference = Histogram(
            "soundsift_inference_seconds",
            "Audio model time per batch.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )

    def observe_batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.inference.observe(seconds)


def replica_devices(settings: Settings) -> list[str]:
    """Devices to load a model replica on: from --gpus when given, else --device."""
    if settings.gpus is None or settings.gpus == "none":
        return [settings.device if settings.gpus is None else "cpu"]
    import torch

    available = torch.cuda.device_count()
    if available == 0:
        raise ConfigurationError(f"--gpus {settings.gpus} was asked for but no CUDA GPU is available")
    indices = range(available) if settings.gpus == "all" else [int(part) for part in settings.gpus.split(",")]
    missing = [index for index in indices if index >= available]
    if missing:
        raise ConfigurationError(f"GPU(s) {missing} do not exist: {available} visible")
    return [f"cuda:{index}" for index in indices]


class ClassificationService:
    """Model replicas behind one micro-batcher, with async entry points for the front ends."""

    def __init__(self, settings: Settings, replicas: Sequence[Classifier]) -> None:
        self.settings = settings
        self.replicas = list(replicas)
        self.metrics = Metrics()
        self.batcher = MicroBatcher(
            self.replicas,
            max_batch_size=settings.micro_batch_size,
            max_wait_s=settings.micro_batch_wait_ms / 1000.0,
            max_queue=settings.max_queue,
            observer=self.metrics.observe_batch,
        )
        self.ready = False
        self.metrics.queue_depth.set_function(lambda: self.batcher.depth)

    @classmethod
    def load(cls, settings: Settings) -> ClassificationService:
        return cls(settings, [Classifier(settings, device=device) for device in replica_devices(settings)])

    @property
    def classifier(self) -> Classifier:
        """The first replica: label preparation and text embeddings run here (they are cached)."""
        return self.replicas[0]

    async def start(self) -> None:
        await self.batcher.start()
        await self.warm_up()
        self.ready = True

    async def stop(self) -> None:
        self.ready = False
        await self.batcher.stop()

    async def warm_up(self) -> None:
        """One classification per replica so first requests don't pay one-off costs."""
        one_second = (np.zeros(self.classifier.sample_rate, dtype=np.float32), self.classifier.sample_rate)
        for replica in self.replicas:
            await run_in_threadpool(replica.classify, one_second, "speech, music")

    async def prepare_labels(
        self, labels: str | Sequence[str], templates: Sequence[str] | None, multi_label: bool
    ) -> PreparedLabels:
        return await run_in_threadpool(
            self.classifier.prepare_labels, labels, templates=templates, multi_label=multi_label
        )

    async def classify(
        self,
        audio: AudioInput,
        prepared: PreparedLabels,
        *,
        source: str | None = None,
        threshold: float | None = None,
        label_thresholds: float | Mapping[str, float] | None = None,
    ) -> Classification:
        """Decode on a worker thread, embed through the micro-batcher, score."""
        decoded = await run_in_threadpool(self.classifier.load, audio, source=source)
        embedding = await self.batcher.embed(decoded)
        return self.classifier.result_from_embedding(
            decoded, embedding, prepared, threshold=threshold, label_thresholds=label_thresholds
        )

    async def classify_many(
        self,
        audios: Sequence[tuple[AudioInput, str]],
        prepared: PreparedLabels,
        *,
        threshold: float | None = None,
        label_thresholds: float | Mapping[str, float] | None = None,
    ) -> list[Classification | FailedInput]:
        """Classify (audio, name) pairs concurrently; a bad input becomes a FailedInput in place."""

        async def one(audio: AudioInput, name: str) -> Classification | FailedInput:
            try:
                return await self.classify(
                    audio, prepared, source=name, threshold=threshold, label_thresholds=label_thresholds
                )
            except SoundsiftError as error:
                return failed_input(name or describe_source(audio), error)

        return list(await asyncio.gather(*(one(audio, name) for audio, name in audios)))

    async def detect(self, audio: AudioInput, labels: str | Sequence[str], **options: Any) -> Detection:
        """Sound events in a recording; its windows are batched by the classifier itself."""
        return await run_in_threadpool(self.classifier.detect, audio, labels, **options)

    async def embed_audio(self, audio: AudioInput, source: str) -> np.ndarray:
        decoded = await run_in_threadpool(self.classifier.load, audio, source=source)
        return await self.batcher.embed(decoded)

    async def embed_text(self, texts: Sequence[str]) -> np.ndarray:
        return await run_in_threadpool(self.classifier.embed_text, list(texts))


def elapsed_ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000.0, 2)
