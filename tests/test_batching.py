from __future__ import annotations

import asyncio

import numpy as np
import pytest

from soundsift.audio import load_audio
from soundsift.batching import MicroBatcher, QueueFullError


def test_waiting_clips_share_one_model_call_and_each_gets_its_own_embedding(classifier, esc50_clips):
    clips = [load_audio(path, 48_000) for path in esc50_clips[:6]]
    sizes: list[int] = []

    async def scenario():
        batcher = MicroBatcher(
            [classifier], max_batch_size=4, max_wait_s=0.05, max_queue=100, observer=lambda size, _: sizes.append(size)
        )
        await batcher.start()
        try:
            return await asyncio.gather(*(batcher.embed(clip) for clip in clips))
        finally:
            await batcher.stop()

    embeddings = asyncio.run(scenario())
    assert sizes == [4, 2]
    np.testing.assert_allclose(np.stack(embeddings), classifier.embed_decoded(clips), atol=1e-5)


def test_full_queue_refuses_at_once(classifier, esc50_clips):
    clip = load_audio(esc50_clips[0], 48_000)

    async def scenario():
        batcher = MicroBatcher([classifier], max_batch_size=1, max_wait_s=0.0, max_queue=2)
        await batcher.start()
        try:
            # All three submissions run before the worker wakes, so the third finds two waiting.
            return await asyncio.gather(*(batcher.embed(clip) for _ in range(3)), return_exceptions=True)
        finally:
            await batcher.stop()

    outcomes = asyncio.run(scenario())
    assert isinstance(outcomes[2], QueueFullError)
    assert all(isinstance(outcome, np.ndarray) for outcome in outcomes[:2])


def test_model_errors_reach_the_callers_and_the_worker_survives(classifier, esc50_clips):
    good = load_audio(esc50_clips[0], 48_000)
    broken = type(good)(np.zeros(0, dtype=np.float32), 48_000, "broken", False)

    async def scenario():
        batcher = MicroBatcher([classifier], max_batch_size=1, max_wait_s=0.0, max_queue=10)
        await batcher.start()
        try:
            with pytest.raises(Exception):  # noqa: B017 - any model error must propagate
                await batcher.embed(broken)
            return await batcher.embed(good)
        finally:
            await batcher.stop()

    assert asyncio.run(scenario()).shape == (16,)
