from __future__ import annotations

import asyncio

import numpy as np

from soundsift.core.audio import load_audio
from soundsift.core.classifier import ClipFeatures
from soundsift.errors import SoundsiftError
from soundsift.serving.batcher import MicroBatcher, QueueFullError


def test_waiting_clips_share_one_model_call_and_each_gets_its_own_embedding(classifier, esc50_clips):
    clips = [load_audio(path, 48_000) for path in esc50_clips[:6]]
    sizes: list[int] = []

    async def scenario():
        batcher = MicroBatcher(
            [classifier], max_batch_size=4, max_wait_s=0.05, max_queue=100, observer=lambda size, _: sizes.append(size)
        )
        await batcher.start()
        try:
            return await asyncio.gather(*(batcher.embed(classifier.featurize(clip)) for clip in clips))
        finally:
            await batcher.stop()

    embeddings = asyncio.run(scenario())
    assert sizes == [4, 2]
    np.testing.assert_allclose(np.stack(embeddings), classifier.embed_decoded(clips), atol=1e-5)


def test_full_queue_refuses_at_once(classifier, esc50_clips):
    features = classifier.featurize(load_audio(esc50_clips[0], 48_000))

    async def scenario():
        batcher = MicroBatcher([classifier], max_batch_size=1, max_wait_s=0.0, max_queue=2)
        await batcher.start()
        try:
            # All three submissions run before the worker wakes, so the third finds two waiting.
            return await asyncio.gather(*(batcher.embed(features) for _ in range(3)), return_exceptions=True)
        finally:
            await batcher.stop()

    outcomes = asyncio.run(scenario())
    assert isinstance(outcomes[2], QueueFullError)
    assert all(isinstance(outcome, np.ndarray) for outcome in outcomes[:2])


def test_a_clip_the_model_fails_on_fails_alone_and_its_batch_neighbours_succeed(classifier, esc50_clips):
    good = [classifier.featurize(load_audio(path, 48_000)) for path in esc50_clips[:3]]
    # Features of the wrong shape make the model itself raise, as an unexpected failure would.
    broken = ClipFeatures(np.zeros((4, 1001, 7), dtype=np.float32), False)

    async def scenario():
        batcher = MicroBatcher([classifier], max_batch_size=8, max_wait_s=0.05, max_queue=10)
        await batcher.start()
        try:
            outcomes = await batcher.embed_many([good[0], broken, good[1], good[2]])
            after = await batcher.embed(good[0])  # the worker lives on
            return outcomes, after
        finally:
            await batcher.stop()

    outcomes, after = asyncio.run(scenario())
    assert isinstance(outcomes[1], SoundsiftError) and outcomes[1].code == "processing_failed"
    expected = classifier.embed_features(good)
    for outcome, embedding in zip([outcomes[0], *outcomes[2:]], expected, strict=True):
        np.testing.assert_allclose(outcome, embedding, atol=1e-5)
    np.testing.assert_allclose(after, expected[0], atol=1e-5)
