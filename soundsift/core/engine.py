"""One engine owns every model call of a process that serves many callers (the server, the monitor).

Callers on any thread (or coroutines, through the ``*_async`` methods) submit audio features and
texts; one worker thread per replica (a `LocalEmbedder` per device) picks a kind, gathers inputs of
that kind (up to ``max_batch_size`` clips or ``max_text_batch_size`` texts, waiting at most
``max_wait_s`` for more) and embeds them in one call. So texts are batched with texts and clips with
clips, and no two model calls of a replica ever compete for its cores.

The kinds take turns: when both wait, a replica runs the kind it did not run last, and texts first.
A text call is short (a few milliseconds per text) while an audio call of a full batch takes up to
seconds on a CPU, so texts going first costs the clips little and spares a text request (a label
set, a search query) from waiting behind every clip queued before it. Neither kind can starve: each
waits for at most one call of the other kind beyond the call already running.

Engines of several models in one process (a server serving two checkpoints) may share a ``gate``, a
semaphore every model call holds while it runs: on a CPU, their replicas then take turns on the
cores instead of splitting them, so each call runs at full speed.

While a batch runs, new inputs queue up, so batches grow with load. Clips wait as features (about
1 MB each); past ``max_queue`` waiting clips a submission raises QueueFullError at once. Texts are
not counted against it: each caller's texts are bounded by the label limits, and callers are few
(the server's worker pool). An input the model fails on gets its own error (the replica retries a
failed batch one input at a time); a cancelled input is skipped when its turn comes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Literal

from soundsift.core.pipeline import ClipFeatures, Embedder, Outcome
from soundsift.errors import ProcessingError, QueueFullError, ServiceStoppingError

logger = logging.getLogger("soundsift")

Kind = Literal["audio", "text"]
KINDS: tuple[Kind, ...] = ("audio", "text")
BatchObserver = Callable[[Kind, int, float], None]
"""Called with (kind, batch size, model seconds) after every model call."""


@dataclass
class BatchStats:
    batches: int = 0
    items: int = 0
    largest_batch: int = 0
    model_s: float = 0.0

    @property
    def mean_batch(self) -> float:
        return self.items / self.batches if self.batches else 0.0

    def record(self, size: int, seconds: float) -> None:
        self.batches += 1
        self.items += size
        self.largest_batch = max(self.largest_batch, size)
        self.model_s += seconds


@dataclass
class _Job:
    kind: Kind
    item: ClipFeatures | str
    future: Future[Outcome]


class ModelEngine:
    """Replicas behind one queue of audio and text inputs; it is itself an `Embedder`."""

    def __init__(
        self,
        replicas: Sequence[Embedder],
        *,
        max_batch_size: int,
        max_text_batch_size: int = 64,
        max_wait_s: float = 0.0,
        max_queue: int = 1024,
        observer: BatchObserver | None = None,
        gate: threading.Semaphore | None = None,
    ) -> None:
        if not replicas:
            raise ValueError("the engine needs at least one replica")
        self.replicas = list(replicas)
        self.limits: dict[Kind, int] = {"audio": max_batch_size, "text": max_text_batch_size}
        self.max_wait_s, self.max_queue = max_wait_s, max_queue
        self.stats: dict[Kind, BatchStats] = {kind: BatchStats() for kind in KINDS}
        self._observer = observer
        self._gate: contextlib.AbstractContextManager[object] = gate or contextlib.nullcontext()
        self._waiting: dict[Kind, deque[_Job]] = {kind: deque() for kind in KINDS}
        self._condition = threading.Condition()
        self._stopping = False
        self._threads = [
            threading.Thread(target=self._work, args=(replica,), name=f"soundsift-model-{index}", daemon=True)
            for index, replica in enumerate(self.replicas)
        ]

    @property
    def depth(self) -> int:
        """Inputs waiting for the model (both kinds)."""
        with self._condition:
            return sum(len(jobs) for jobs in self._waiting.values())

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def close(self) -> None:
        """Fail what still waits (ServiceStoppingError), let running model calls finish, stop."""
        self.fail_waiting(ServiceStoppingError("the model engine is shutting down"), stop=True)
        for thread in self._threads:
            if thread.is_alive():
                thread.join()

    def fail_waiting(self, error: Exception, *, stop: bool = False) -> int:
        """Fail every input not yet in a model call with ``error``; returns how many."""
        with self._condition:
            self._stopping = self._stopping or stop
            jobs = [job for kind in KINDS for job in self._waiting[kind]]
            for queue in self._waiting.values():
                queue.clear()
            self._condition.notify_all()
        return sum(job.future.set_running_or_notify_cancel() and _fail(job, error) for job in jobs)

    def warm_up(self, items: Sequence[ClipFeatures], texts: Sequence[str]) -> None:
        """Embed ``items`` and ``texts`` once on every replica (before serving: one-off costs such as
        allocator growth and lazy kernels are paid here, not by the first requests)."""
        for replica in self.replicas:
            replica.embed_audio(items)
            replica.embed_text(texts)

    # ---- submitting ---------------------------------------------------------------------------

    def submit_audio(self, items: Sequence[ClipFeatures]) -> list[Future[Outcome]]:
        return self._submit("audio", items)

    def submit_text(self, texts: Sequence[str]) -> list[Future[Outcome]]:
        return self._submit("text", texts)

    def embed_audio(self, items: Sequence[ClipFeatures]) -> list[Outcome]:
        """One outcome per clip, in order, from shared batches (blocks the calling thread)."""
        return [future.result() for future in self.submit_audio(items)]

    def embed_text(self, texts: Sequence[str]) -> list[Outcome]:
        return [future.result() for future in self.submit_text(texts)]

    async def embed_audio_async(self, items: Sequence[ClipFeatures]) -> list[Outcome]:
        """`embed_audio` for coroutines; cancelling the caller skips its clips not yet embedded."""
        return await _gathered(self.submit_audio(items))

    async def embed_text_async(self, texts: Sequence[str]) -> list[Outcome]:
        return await _gathered(self.submit_text(texts))

    def _submit(self, kind: Kind, items: Sequence[ClipFeatures | str]) -> list[Future[Outcome]]:
        with self._condition:
            if self._stopping:
                raise ServiceStoppingError("the model engine is shutting down")
            waiting = len(self._waiting["audio"])
            if kind == "audio" and waiting + len(items) > self.max_queue:
                raise QueueFullError(f"{waiting} clips are waiting for the model")
            jobs = [_Job(kind, item, Future()) for item in items]
            self._waiting[kind].extend(jobs)
            self._condition.notify_all()
        return [job.future for job in jobs]

    # ---- the replicas' workers ----------------------------------------------------------------

    def _work(self, replica: Embedder) -> None:
        previous: Kind = "audio"  # so that texts go first when both kinds are waiting
        while (batch := self._next_batch(previous)) is not None:
            kind, jobs = batch
            previous = kind
            with self._gate:
                started = time.perf_counter()
                outcomes = _embedded(replica, kind, jobs)
                seconds = time.perf_counter() - started
            with self._condition:
                self.stats[kind].record(len(jobs), seconds)
            if self._observer is not None:
                self._observer(kind, len(jobs), seconds)
            for job, outcome in zip(jobs, outcomes, strict=True):
                job.future.set_result(outcome)

    def _next_batch(self, previous: Kind) -> tuple[Kind, list[_Job]] | None:
        """The next inputs to embed together (the kinds taking turns after ``previous``), or None when
        the engine stops."""
        with self._condition:
            while True:
                while not self._stopping and not any(self._waiting.values()):
                    self._condition.wait()
                if self._stopping:
                    return None
                waiting = [kind for kind in KINDS if self._waiting[kind]]
                kind = waiting[0] if len(waiting) == 1 else _other(previous)
                jobs = self._gather(kind)
                if jobs:
                    return kind, jobs

    def _gather(self, kind: Kind) -> list[_Job]:
        """Inputs of ``kind``, up to its batch limit, waiting at most ``max_wait_s`` for more.
        Called with the condition held; a cancelled input is dropped here."""
        queue, limit = self._waiting[kind], self.limits[kind]
        deadline = time.monotonic() + self.max_wait_s
        jobs: list[_Job] = []
        while True:
            while queue and len(jobs) < limit:
                job = queue.popleft()
                if job.future.set_running_or_notify_cancel():
                    jobs.append(job)
            remaining = deadline - time.monotonic()
            if len(jobs) >= limit or self._stopping or remaining <= 0:
                return jobs
            self._condition.wait(remaining)


def _other(kind: Kind) -> Kind:
    return "text" if kind == "audio" else "audio"


def _embedded(replica: Embedder, kind: Kind, jobs: list[_Job]) -> list[Outcome]:
    try:
        if kind == "audio":
            return replica.embed_audio([job.item for job in jobs if isinstance(job.item, ClipFeatures)])
        return replica.embed_text([job.item for job in jobs if isinstance(job.item, str)])
    except Exception:  # an Embedder isolates model failures; a bug must still not end the worker
        logger.exception("embedding a batch of %d %s inputs failed", len(jobs), kind)
        return [ProcessingError("the model failed; see the log") for _ in jobs]


def _fail(job: _Job, error: Exception) -> bool:
    job.future.set_exception(error)
    return True


async def _gathered(futures: list[Future[Outcome]]) -> list[Outcome]:
    wrapped = [asyncio.wrap_future(future) for future in futures]
    try:
        return list(await asyncio.gather(*wrapped))
    finally:
        for future in wrapped:  # a cancelled request's inputs are skipped when their turn comes
            future.cancel()
