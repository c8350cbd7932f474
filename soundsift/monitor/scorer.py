"""One model for every stream: the windows that streams have due are embedded together, in one batch.

Each stream featurizes its own window (on its own thread) and submits the features; one scorer
thread takes everything that is waiting, embeds it with one `Classifier.embed_features_isolated`
call, and hands each stream its embedding. There is no gathering delay: at light load a window is
embedded alone at once, and under load the windows that arrive while the model is busy form the
next batch by themselves, so batches grow with the number of streams exactly when it pays.
A stream waits for its window before it takes the next, so at most one window per stream waits.
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np

from soundsift.core.classifier import Classifier, ClipFeatures
from soundsift.errors import SoundsiftError

Embedding = np.ndarray | SoundsiftError


@dataclass
class ScorerStats:
    batches: int = 0
    windows: int = 0
    largest_batch: int = 0
    model_s: float = 0.0

    @property
    def mean_batch(self) -> float:
        return self.windows / self.batches if self.batches else 0.0


class SharedScorer:
    def __init__(self, classifier: Classifier, *, max_batch: int = 64) -> None:
        self.classifier, self.max_batch = classifier, max_batch
        self.stats = ScorerStats()
        self._waiting: queue.Queue[tuple[ClipFeatures, Future[Embedding]] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="soundsift-scorer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, features: ClipFeatures) -> Future[Embedding]:
        """The window's embedding (or the error that replaced it), when its batch is done."""
        future: Future[Embedding] = Future()
        self._waiting.put((features, future))
        return future

    def close(self) -> None:
        """Finish what was submitted, then stop."""
        self._waiting.put(None)
        self._thread.join()

    def _run(self) -> None:
        while (first := self._waiting.get()) is not None:
            batch, stopping = [first], False
            while len(batch) < self.max_batch:
                try:
                    item = self._waiting.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stopping = True
                    break
                batch.append(item)
            self._embed(batch)
            if stopping:
                return

    def _embed(self, batch: list[tuple[ClipFeatures, Future[Embedding]]]) -> None:
        started = time.perf_counter()
        # A window that makes the model fail gets an error of its own; the rest of the batch is embedded.
        outcomes = self.classifier.embed_features_isolated([features for features, _ in batch])
        self.stats.model_s += time.perf_counter() - started
        self.stats.batches += 1
        self.stats.windows += len(batch)
        self.stats.largest_batch = max(self.stats.largest_batch, len(batch))
        for (_, future), outcome in zip(batch, outcomes):
            future.set_result(outcome)
