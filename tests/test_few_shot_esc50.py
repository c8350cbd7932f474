"""The few-shot protocol on real recordings (ESC-50 fold 1 in ../shared, 8 classes x 8 clips) with
the tiny random CLAP: taught adapters beat zero-shot, as on the full-size model
(benchmarks/few_shot.py measures that one)."""

from __future__ import annotations

import pytest

from soundsift.jobs.few_shot import embed_dataset, shots_table
from tests.data.shared import ESC50, shared_path

pytestmark = pytest.mark.slow  # embeds 64 real clips

CLASSES = 8


def test_a_few_shots_beat_zero_shot_on_real_recordings(classifier, esc50_rows):
    root = shared_path(ESC50)
    chosen = sorted({row["category"] for row in esc50_rows})[:CLASSES]
    rows = [row for row in esc50_rows if row["category"] in chosen]
    data = embed_dataset(
        classifier,
        [str(root / "audio" / row["filename"]) for row in rows],
        [row["category"] for row in rows],
        [row["fold"] for row in rows],
        chosen,
    )
    assert data.failed == 0 and len(data.vectors) == CLASSES * 8
    table = shots_table(classifier, data, chosen, shots=[1, 4], seeds=3)
    assert table["0"]["runs"] == 1 and table["4"]["runs"] == 3
    assert table["4"]["mean"] > table["0"]["mean"] + 0.1, table
    assert table["1"]["mean"] > table["0"]["mean"], table
    assert set(table["4"]["methods"]) <= {"prototype", "tip", "probe"}
