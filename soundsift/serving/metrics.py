"""Prometheus metrics of one service, in a registry of their own (one per app)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

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
        self.queue_depth = Gauge(
            "soundsift_queue_depth", "Inputs (clips and texts) waiting for the model.", registry=self.registry
        )
        self.admitted = Gauge(
            "soundsift_admitted_requests",
            "Requests admitted (decoding or waiting for the model).",
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "soundsift_batch_size", "Clips per model call.", buckets=(1, 2, 4, 8, 16, 32, 64), registry=self.registry
        )
        self.inference = Histogram(
            "soundsift_inference_seconds",
            "Audio model time per batch.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )

        self.text_batch_size = Histogram(
            "soundsift_text_batch_size",
            "Texts per model call.",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
            registry=self.registry,
        )
        self.text_inference = Histogram(
            "soundsift_text_inference_seconds",
            "Text model time per batch.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.detect_windows = Counter(
            "soundsift_detect_windows",
            "Windows of /api/detect recordings: scored by the model, or gated (quieter than min_dbfs).",
            ["outcome"],
            registry=self.registry,
        )

    def observe_detection(self, windows: int, gated: int) -> None:
        self.detect_windows.labels(outcome="scored").inc(windows - gated)
        self.detect_windows.labels(outcome="gated").inc(gated)

    def observe_batch(self, kind: str, size: int, seconds: float) -> None:
        """One model call of the engine: its kind ("audio" or "text"), inputs and seconds."""
        sizes, times = (
            (self.batch_size, self.inference) if kind == "audio" else (self.text_batch_size, self.text_inference)
        )
        sizes.observe(size)
        times.observe(seconds)
