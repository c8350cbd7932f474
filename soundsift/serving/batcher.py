"""Dynamic micro-batching: concurrent requests share model calls.

Each replica (one Classifier per device) runs a worker that takes the first waiting clip, gathers
more for at most ``max_wait_s`` or until ``max_batch_size``, and embeds them in one call on a thread,
off the event loop. While a batch runs, new clips queue up, so batches grow with load. The queue is
bounded: past ``max_queue`` waiting clips, submitting raises QueueFullError at once. Clips wait as
features (about 1 MB each, whatever their length), never as decoded audio.

A clip that makes the model fail gets its own error; the other clips of its batch still get their
embeddings (the replica retries a failed batch one clip at a time).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from soundsift.core.classifier import Classifier, ClipFeatures
from soundsift.errors import SoundsiftError


class QueueFullError(Exception):
    """The model queue is full; the caller should retry later."""


class ServiceStoppingError(QueueFullError):
    """The service is shutting down; the work was not started. Retry on another replica."""


@dataclass
class _Job:
    item: ClipFeatures
    future: asyncio.Future[np.ndarray | SoundsiftError]


BatchObserver = Callable[[int, float], None]
"""Called with (batch size, inference seconds) after every model call."""


class MicroBatcher:
    def __init__(
        self,
        replicas: Sequence[Classifier],
        *,
        max_batch_size: int,
        max_wait_s: float,
        max_queue: int,
        observer: BatchObserver | None = None,
    ) -> None:
        self.replicas = list(replicas)
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.max_queue = max_queue
        self._observer = observer
        self._queue: asyncio.Queue[_Job] | None = None
        self._workers: list[asyncio.Task[None]] = []
        self._executor = ThreadPoolExecutor(max_workers=len(self.replicas), thread_name_prefix="soundsift-model")

    @property
    def depth(self) -> int:
        return self._queue.qsize() if self._queue else 0

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._workers = [asyncio.create_task(self._work(replica)) for replica in self.replicas]

    async def stop(self) -> None:
        """Fail what still waits, stop the workers, and let a running model call finish off the event loop."""
        self.fail_waiting(ServiceStoppingError("the server is shutting down"))
        for worker in self._workers:
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        await asyncio.get_running_loop().run_in_executor(None, self._executor.shutdown)

    def fail_waiting(self, error: Exception) -> int:
        """Fail every clip not yet in a model call with ``error``; returns how many."""
        failed = 0
        while self._queue is not None and not self._queue.empty():
            job = self._queue.get_nowait()
            if not job.future.done():
                job.future.set_exception(error)
                failed += 1
        return failed

    async def embed(self, item: ClipFeatures) -> np.ndarray:
        """The clip's audio embedding, computed in a shared batch; its own error is raised."""
        (outcome,) = await self.embed_many([item])
        if isinstance(outcome, SoundsiftError):
            raise outcome
        return outcome

    async def embed_many(self, items: Sequence[ClipFeatures]) -> list[np.ndarray | SoundsiftError]:
        """One embedding or error per clip, in order; the clips may land in different batches."""
        if self._queue is None:
            raise RuntimeError("MicroBatcher.start() was not called")
        if self._queue.qsize() + len(items) > self.max_queue:
            raise QueueFullError(f"{self._queue.qsize()} clips are waiting for the model")
        loop = asyncio.get_running_loop()
        jobs = [_Job(item, loop.create_future()) for item in items]
        for job in jobs:
            self._queue.put_nowait(job)
        try:
            return list(await asyncio.gather(*(job.future for job in jobs)))
        finally:
            for job in jobs:  # a cancelled request's clips are skipped when their turn comes
                job.future.cancel()

    async def _work(self, replica: Classifier) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._gather()
            if not batch:
                continue
            started = time.perf_counter()
            outcomes = await loop.run_in_executor(
                self._executor, replica.embed_features_isolated, [job.item for job in batch]
            )
            if self._observer:
                self._observer(len(batch), time.perf_counter() - started)
            for job, outcome in zip(batch, outcomes, strict=True):
                if not job.future.done():
                    job.future.set_result(outcome)

    async def _gather(self) -> list[_Job]:
        assert self._queue is not None
        batch = [await self._queue.get()]
        deadline = time.monotonic() + self.max_wait_s
        while len(batch) < self.max_batch_size:
            if not self._queue.empty():
                batch.append(self._queue.get_nowait())
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except asyncio.TimeoutError:
                break
        return [job for job in batch if not job.future.done()]
