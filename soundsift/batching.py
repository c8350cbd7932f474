"""Dynamic micro-batching: concurrent requests share model calls.

Each replica (one Classifier per device) runs a worker that takes the first waiting clip, gathers
more for at most ``max_wait_s`` or until ``max_batch_size``, and embeds them in one call on a thread,
off the event loop. While a batch runs, new clips queue up, so batches grow with load. The queue is
bounded: past ``max_queue`` waiting clips, `submit` raises QueueFullError at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from soundsift.audio import DecodedAudio
from soundsift.classifier import Classifier


class QueueFullError(Exception):
    """The model queue is full; the caller should retry later."""


@dataclass
class _Job:
    clip: DecodedAudio
    future: asyncio.Future


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
        self._workers: list[asyncio.Task] = []
        self._executor = ThreadPoolExecutor(max_workers=len(self.replicas), thread_name_prefix="soundsift-model")

    @property
    def depth(self) -> int:
        return self._queue.qsize() if self._queue else 0

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._workers = [asyncio.create_task(self._work(replica)) for replica in self.replicas]

    async def stop(self) -> None:
        for worker in self._workers:
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._executor.shutdown(wait=True)

    async def embed(self, clip: DecodedAudio) -> np.ndarray:
        """The clip's audio embedding, computed in a shared batch."""
        if self._queue is None:
            raise RuntimeError("MicroBatcher.start() was not called")
        if self._queue.qsize() >= self.max_queue:
            raise QueueFullError(f"{self._queue.qsize()} clips are waiting for the model")
        job = _Job(clip, asyncio.get_running_loop().create_future())
        self._queue.put_nowait(job)
        return await job.future

    async def _work(self, replica: Classifier) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._gather()
            started = time.perf_counter()
            try:
                embeddings = await loop.run_in_executor(
                    self._executor, replica.embed_decoded, [job.clip for job in batch]
                )
            except Exception as error:  # the batch's callers get the error; the worker lives on
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(error)
                continue
            if self._observer:
                self._observer(len(batch), time.perf_counter() - started)
            for job, embedding in zip(batch, embeddings):
                if not job.future.done():
                    job.future.set_result(embedding)

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
        return [job for job in batch if not job.future.cancelled()]
