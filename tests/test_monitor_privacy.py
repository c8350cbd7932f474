"""Privacy: no evidence clip contains a window where a private label (speech, by default) was heard,
and the event says so.

The tiny random CLAP's scores mean nothing, so the private label is made certain to be heard the
honest way: its threshold is 0, so every window that is scored hears it (gated, near-silent windows
are not scored and hear nothing). The rest of the rule, which stretches a clip may contain, is
tested on the evidence recorder itself with the windows it is told were judged."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
import soundfile

from soundsift.monitor.config import EvidenceConfig, MonitorConfig
from soundsift.monitor.evidence import WRITTEN, EvidenceStore, StreamEvidence
from soundsift.monitor.privacy import PRIVATE, UNJUDGED, default_private_terms, private_labels
from soundsift.monitor.runner import MonitorService
from tests.monitor.receiver import Receiver

SPEECH = Path(__file__).resolve().parents[1] / "soundsift" / "examples" / "speech.ogg"
RATE = 1000  # the recorder's unit tests count in samples: 1000 a second keeps the numbers readable


def test_default_private_terms_hold_speech_talking_conversation_and_their_translations():
    terms = default_private_terms()
    assert {"speech", "talking", "conversation"} <= set(terms)
    assert {"speaking", "human voice", "说话声", "对话", "人声"} <= set(terms)


def test_which_labels_are_private(classifier):
    labels = "speech, dog barking, people talking, 小孩说话, speechless dog, Conversation | chat, music (not speech)"
    prepared = classifier.prepare_labels(labels)
    assert private_labels(prepared, default_private_terms()) == [
        "speech",
        "people talking",
        "小孩说话",
        "Conversation | chat",
    ]
    assert private_labels(prepared, ["dog"]) == ["dog barking", "speechless dog"]
    assert private_labels(prepared, []) == []


def recorder(tmp_path: Path, withheld: list) -> StreamEvidence:
    store = EvidenceStore(EvidenceConfig(dir=tmp_path / "clips", before_s=1.0, after_s=1.0))
    return StreamEvidence(
        store,
        "hall",
        RATE,
        longest_event_s=4.0,
        guarded=True,
        lag_s=1.0,
        on_withheld=lambda path, reason: withheld.append((path.name, reason)),
    )


def feed_and_judge(evidence: StreamEvidence, seconds: float, *, private_at: set[float] = frozenset()) -> None:
    """Feed ``seconds`` of audio in 0.5 s blocks, judging a 1 s window after each block."""
    for _ in range(int(seconds * 2)):
        evidence.feed(np.full(RATE // 2, 0.1, dtype=np.float32))
        end = evidence.ring.total
        evidence.judged(end - RATE, end, private=end / RATE in private_at)


WHEN = datetime(2026, 12, 1, 3, 0, tzinfo=timezone.utc)


def test_a_clip_with_nothing_private_is_written_one_window_late(tmp_path):
    withheld: list = []
    evidence = recorder(tmp_path, withheld)
    feed_and_judge(evidence, 4)
    path, reason = evidence.start("dog", 3.0, 4.0, WHEN)  # clip: 2 s .. 5 s
    assert path is not None and reason is None
    feed_and_judge(evidence, 1)
    assert not path.exists(), "written before the windows over its last second were judged"
    feed_and_judge(evidence, 1)
    assert path.exists() and withheld == [] and evidence.store.wait(path, 0) == WRITTEN
    assert soundfile.info(path).frames == 3 * RATE


def test_private_before_the_event_withholds_the_clip_at_once(tmp_path):
    withheld: list = []
    evidence = recorder(tmp_path, withheld)
    feed_and_judge(evidence, 4, private_at={2.5})  # the window 1.5 s .. 2.5 s heard speech
    path, reason = evidence.start("dog", 3.0, 4.0, WHEN)  # its clip would start at 2 s
    assert path is None and reason == PRIVATE


def test_private_after_the_event_withholds_the_announced_clip(tmp_path):
    withheld: list = []
    evidence = recorder(tmp_path, withheld)
    feed_and_judge(evidence, 4)
    path, reason = evidence.start("dog", 3.0, 4.0, WHEN)  # clip 2 s .. 5 s, announced
    assert path is not None and reason is None
    feed_and_judge(evidence, 2, private_at={5.5})  # the window 4.5 s .. 5.5 s overlaps its end
    assert not path.exists() and withheld == [(path.name, PRIVATE)]
    assert evidence.store.wait(path, 0) == PRIVATE
    assert list((tmp_path / "clips").rglob("*.flac")) == []


def test_private_well_after_the_clip_changes_nothing(tmp_path):
    withheld: list = []
    evidence = recorder(tmp_path, withheld)
    feed_and_judge(evidence, 4)
    path, _ = evidence.start("dog", 3.0, 4.0, WHEN)  # clip 2 s .. 5 s
    feed_and_judge(evidence, 3, private_at={6.5})  # the window 5.5 s .. 6.5 s does not overlap it
    assert path is not None and path.exists() and withheld == []


def test_audio_never_judged_is_not_written(tmp_path):
    withheld: list = []
    evidence = recorder(tmp_path, withheld)
    feed_and_judge(evidence, 3)
    for _ in range(4):  # 2 s of audio whose windows were skipped (scoring fell behind) or failed
        evidence.feed(np.full(RATE // 2, 0.1, dtype=np.float32))
    path, _ = evidence.start("dog", 4.0, 5.0, WHEN)  # clip 3 s .. 6 s, over the unjudged stretch
    feed_and_judge(evidence, 3)
    assert path is not None and not path.exists() and withheld == [(path.name, UNJUDGED)]


def speech_config(tmp_path: Path, receiver: Receiver, **privacy) -> MonitorConfig:
    return MonitorConfig.model_validate(
        {
            "streams": [
                {
                    "name": "living",
                    "source": str(SPEECH),
                    "labels": "speech, dog barking",
                    "alert": ["dog barking"],
                    "threshold": 0.0,  # every scored window hears both labels: speech among them
                    "confirm": "1/1",
                    "cooldown_s": 2.0,
                    "window_s": 1.0,
                    "hop_s": 0.5,
                    "speed": 8.0,
                }
            ],
            "database": tmp_path / "events.db",
            "evidence": {"dir": tmp_path / "clips", "before_s": 1.0, "after_s": 1.0},
            "notify": {"targets": [{"url": receiver.url("json", "phone"), "attach": True, "cooldown_s": 0}]},
            **privacy,
        }
    )


@pytest.mark.slow
def test_no_clip_is_written_around_speech_and_the_event_says_so(classifier, tmp_path):
    with Receiver() as receiver:
        config = speech_config(tmp_path, receiver)
        stats = MonitorService(classifier, config, emit=lambda _: None).run()["living"]
        assert stats.alerts >= 1
        requests = receiver.wait_for(stats.alerts)
    assert stats.last_event is not None and stats.last_event["evidence"] is None
    assert stats.last_event["evidence_withheld"] == PRIVATE
    assert list((tmp_path / "clips").rglob("*.flac")) == [], "a clip around speech was written"
    with sqlite3.connect(tmp_path / "events.db") as db:
        rows = db.execute("SELECT evidence, evidence_withheld FROM events").fetchall()
    assert rows and all(row == (None, PRIVATE) for row in rows), rows
    for request in requests:
        body = request.json()
        assert "No recording: a private sound" in body["message"] and not body.get("attachments")


@pytest.mark.slow
def test_with_privacy_off_the_same_speech_is_kept(classifier, tmp_path):
    # The control: the guard, not the recording, is what kept the clips away above.
    with Receiver() as receiver:
        config = speech_config(tmp_path, receiver, privacy={"default_private_labels": False})
        stats = MonitorService(classifier, config, emit=lambda _: None).run()["living"]
        receiver.wait_for(stats.alerts)
    assert stats.alerts >= 1 and stats.last_event is not None and stats.last_event["evidence_withheld"] is None
    assert len(list((tmp_path / "clips").rglob("*.flac"))) == stats.alerts


@pytest.mark.parametrize(
    ("privacy", "private"),
    [
        ({}, ["speech"]),
        ({"private_labels": ["Sprache"]}, ["Sprache", "speech"]),  # added to the defaults
        ({"private_labels": "Sprache", "default_private_labels": False}, ["Sprache"]),
        ({"default_private_labels": False}, []),
    ],
)
def test_private_labels_add_to_the_defaults(classifier, tmp_path, privacy, private):
    config = MonitorConfig.model_validate(
        {
            "streams": [{"name": "hall", "source": str(SPEECH), "labels": "Hund bellt, Sprache, speech"}],
            "database": tmp_path / "events.db",
            "privacy": privacy,
        }
    )
    service = MonitorService(classifier, config)
    try:
        assert service.streams[0].private == private
    finally:
        service._close_sinks()
