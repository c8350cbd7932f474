"""One model for every stream: windows waiting at the same time are embedded in one batch, each gets
its own embedding back, and a window the model fails on fails alone."""

from __future__ import annotations

import numpy as np

from soundsift.core.audio import DecodedAudio
from soundsift.errors import SoundsiftError
from soundsift.monitor.scorer import SharedScorer
from tests.data.audio import tone


def test_windows_waiting_together_are_embedded_in_one_batch(classifier):
    rate = classifier.sample_rate
    windows = [
        DecodedAudio(tone(2.0, rate, frequency=frequency)[:, 0], rate, f"stream{index}", False)
        for index, frequency in enumerate((300.0, 600.0, 1200.0))
    ]
    scorer = SharedScorer(classifier)
    futures = [scorer.submit(classifier.featurize(window)) for window in windows]  # before the scorer runs
    scorer.start()
    embeddings = [future.result(timeout=30) for future in futures]
    scorer.close()
    assert scorer.stats.batches == 1 and scorer.stats.windows == 3 and scorer.stats.largest_batch == 3
    alone = classifier.embed_decoded(windows)
    for embedding, expected in zip(embeddings, alone):
        assert not isinstance(embedding, SoundsiftError)
        np.testing.assert_allclose(embedding, expected, atol=1e-5)  # each stream gets its own window's embedding
