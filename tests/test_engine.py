"""The model engine: one queue of audio and text inputs over the replicas. Inputs waiting together
share one model call, each gets its own outcome, a failure stays with its input, the queue is
bounded, and the two kinds take turns, texts first."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from soundsift.core.engine import ModelEngine
from soundsift.core.pipeline import ClipFeatures, LocalEmbedder, Outcome, embeddings_or_raise
from soundsift.errors import QueueFullError, ServiceStoppingError, SoundsiftError
from tests.data.audio import tone


class RecordingReplica:
    """A real replica (the tiny model's LocalEmbedder) that notes each call; ``gate`` holds the
    first call until the test opens it, so inputs pile up behind it deterministically."""

    def __init__(self, classifier, gate: threading.Event | None = None) -> None:
        self.local = LocalEmbedder(classifier.backend, batch_size=64)
        self.calls: list[tuple[str, int]] = []
        self.gate, self.entered = gate, threading.Event()

    def embed_audio(self, items) -> list[Outcome]:
        self._hold("audio", len(items))
        return self.local.embed_audio(items)

    def embed_text(self, texts) -> list[Outcome]:
        self._hold("text", len(texts))
        return self.local.embed_text(texts)

    def _hold(self, kind: str, size: int) -> None:
        self.calls.append((kind, size))
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(60), "the test never opened the gate"


def direct(classifier, items: list[ClipFeatures]) -> np.ndarray:
    """The same clips embedded by the model directly, without the engine."""
    return embeddings_or_raise(LocalEmbedder(classifier.backend, batch_size=8).embed_audio(items))


@pytest.fixture
def clips(classifier) -> list[ClipFeatures]:
    rate = classifier.sample_rate
    return [classifier.pipeline.features_of(tone(2.0, rate, frequency=f)[:, 0]) for f in (300.0, 600.0, 1200.0, 2400.0)]


def test_inputs_waiting_together_share_one_call_and_each_gets_its_own_embedding(classifier, clips):
    replica = RecordingReplica(classifier)
    engine = ModelEngine([replica], max_batch_size=8)
    futures = engine.submit_audio(clips[:3])  # before the worker runs: all three wait together
    engine.start()
    try:
        embeddings = [future.result(timeout=60) for future in futures]
    finally:
        engine.close()
    assert replica.calls == [("audio", 3)]
    assert engine.stats["audio"].batches == 1 and engine.stats["audio"].largest_batch == 3
    np.testing.assert_allclose(np.stack(embeddings), direct(classifier, clips[:3]), atol=1e-5)


def test_batches_are_cut_at_the_batch_size(classifier, clips):
    replica = RecordingReplica(classifier)
    engine = ModelEngine([replica], max_batch_size=2)
    futures = engine.submit_audio(clips[:3])
    engine.start()
    try:
        for future in futures:
            future.result(timeout=60)
    finally:
        engine.close()
    assert replica.calls == [("audio", 2), ("audio", 1)]


def test_texts_are_batched_with_texts_and_go_before_clips_that_waited_longer(classifier, clips):
    gate = threading.Event()
    replica = RecordingReplica(classifier, gate)
    engine = ModelEngine([replica], max_batch_size=8, max_text_batch_size=8)
    engine.start()
    try:
        first = engine.submit_audio(clips[:1])
        assert replica.entered.wait(60)  # the worker is inside the first call; the rest queue behind it
        audio = engine.submit_audio(clips[1:3])
        texts = engine.submit_text(["dog", "siren"])
        more_texts = engine.submit_text(["rain"])
        gate.set()
        outcomes = [future.result(timeout=60) for future in first + audio + texts + more_texts]
    finally:
        gate.set()
        engine.close()
    # the clips queued first, but after an audio call the texts go next, all three in one call
    assert replica.calls == [("audio", 1), ("text", 3), ("audio", 2)]
    np.testing.assert_allclose(np.stack(outcomes[3:5]), classifier.embed_text(["dog", "siren"]), atol=1e-5)


def test_while_both_kinds_wait_they_take_turns_so_neither_starves(classifier, clips):
    gate = threading.Event()
    replica = RecordingReplica(classifier, gate)
    engine = ModelEngine([replica], max_batch_size=1, max_text_batch_size=1)
    engine.start()
    try:
        first = engine.submit_audio(clips[:1])
        assert replica.entered.wait(60)
        texts = engine.submit_text(["dog", "siren", "rain", "wind"])
        audio = engine.submit_audio(clips[1:3])
        gate.set()
        for future in first + texts + audio:
            future.result(timeout=60)
    finally:
        gate.set()
        engine.close()
    kinds = [kind for kind, _ in replica.calls]
    assert kinds == ["audio", "text", "audio", "text", "audio", "text", "text"]


def test_an_input_the_model_fails_on_fails_alone_and_the_worker_lives_on(classifier, clips):
    broken = ClipFeatures(np.zeros((4, 1001, 7), dtype=np.float32), False)  # the model itself raises
    engine = ModelEngine([LocalEmbedder(classifier.backend, 8)], max_batch_size=8)
    futures = engine.submit_audio([clips[0], broken, clips[1]])
    engine.start()
    try:
        outcomes = [future.result(timeout=60) for future in futures]
        (after,) = engine.embed_audio(clips[:1])
    finally:
        engine.close()
    assert isinstance(outcomes[1], SoundsiftError) and outcomes[1].code == "processing_failed"
    expected = direct(classifier, [clips[0], clips[1]])
    np.testing.assert_allclose(np.stack([outcomes[0], outcomes[2]]), expected, atol=1e-5)
    np.testing.assert_allclose(after, expected[0], atol=1e-5)


def test_a_full_queue_refuses_at_once_and_a_closed_engine_refuses_everything(classifier, clips):
    engine = ModelEngine([LocalEmbedder(classifier.backend, 8)], max_batch_size=1, max_queue=2)
    waiting = engine.submit_audio(clips[:2])  # not started: both wait
    with pytest.raises(QueueFullError):
        engine.submit_audio(clips[2:3])
    engine.close()
    for future in waiting:  # what still waited is answered, not left hanging
        with pytest.raises(ServiceStoppingError):
            future.result(timeout=5)
    with pytest.raises(ServiceStoppingError):
        engine.submit_text(["dog"])


def test_a_cancelled_caller_s_inputs_are_skipped(classifier, clips):
    gate = threading.Event()
    replica = RecordingReplica(classifier, gate)
    engine = ModelEngine([replica], max_batch_size=8)
    engine.start()

    async def scenario() -> None:
        first = asyncio.ensure_future(engine.embed_audio_async(clips[:1]))
        await asyncio.get_running_loop().run_in_executor(None, replica.entered.wait, 60)
        abandoned = asyncio.ensure_future(engine.embed_audio_async(clips[1:4]))
        await asyncio.sleep(0)  # submitted
        abandoned.cancel()
        gate.set()
        await first
        assert engine.embed_text(["dog"])  # the next call is the text, not the abandoned clips

    try:
        asyncio.run(scenario())
    finally:
        gate.set()
        engine.close()
    assert replica.calls == [("audio", 1), ("text", 1)]


def test_engines_sharing_a_gate_never_run_model_calls_at_once(classifier, clips):
    """Two models' engines on one CPU: while one's call runs, the other's waits for the cores."""
    first_gate = threading.Event()
    first, second = RecordingReplica(classifier, first_gate), RecordingReplica(classifier)
    shared = threading.Semaphore(1)
    engines = [ModelEngine([replica], max_batch_size=8, gate=shared) for replica in (first, second)]
    for engine in engines:
        engine.start()
    try:
        held = engines[0].submit_audio(clips[:1])
        assert first.entered.wait(60)
        waiting = engines[1].submit_audio(clips[1:2])
        assert not second.entered.wait(0.5), "the second model ran while the first held the cores"
        first_gate.set()
        held[0].result(timeout=60)
        waiting[0].result(timeout=60)
        assert second.calls == [("audio", 1)]
    finally:
        first_gate.set()
        for engine in engines:
            engine.close()
