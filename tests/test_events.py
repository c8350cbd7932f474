"""The event logic as pure functions over synthetic score tracks."""

from __future__ import annotations

import numpy as np
import pytest

from soundsift.detection.events import EventRules, active_runs, detect_events, smooth
from soundsift.monitor.gate import AlertGate


def track(values, labels=("glass breaking",)):
    return np.array(values, dtype=float).reshape(-1, len(labels))


def times(count, hop=1.0, first=0.5):
    return [first + i * hop for i in range(count)]


def test_hysteresis_keeps_an_event_on_between_the_thresholds():
    values = [0.1, 0.6, 0.45, 0.45, 0.3, 0.1]
    assert active_runs(np.array(values), on=0.5, off=0.4) == [(1, 3)]
    assert active_runs(np.array(values), on=0.5, off=0.5) == [(1, 1)]


def test_onset_and_offset_are_exact_to_one_hop():
    hop = 0.5
    true_on, true_off = 10.0, 20.0
    centres = times(80, hop=hop, first=hop / 2)
    values = [[0.9 if true_on <= c <= true_off else 0.05] for c in centres]
    (event,) = detect_events(centres, np.array(values), ["siren"], hop, EventRules(threshold=0.5))
    assert abs(event.start_s - true_on) <= hop and abs(event.end_s - true_off) <= hop
    assert event.peak_score == pytest.approx(0.9) and event.mean_score == pytest.approx(0.9)


def test_smoothing_suppresses_a_one_window_spike():
    values = track([0.0, 0.0, 0.9, 0.0, 0.0])
    assert len(detect_events(times(5), values, ["x"], 1.0, EventRules(threshold=0.5))) == 1
    assert detect_events(times(5), values, ["x"], 1.0, EventRules(threshold=0.5, smoothing_windows=3)) == []
    np.testing.assert_allclose(smooth(np.array([0, 0, 0.9, 0, 0.0]), 3), [0, 0.3, 0.3, 0.3, 0])


def test_minimum_duration_drops_short_events():
    values = track([0.9, 0.0, 0.0, 0.9, 0.9, 0.9, 0.0])
    events = detect_events(times(7), values, ["x"], 1.0, EventRules(threshold=0.5, min_duration_s=2.0))
    assert [(e.start_s, e.end_s) for e in events] == [(3.0, 6.0)]


def test_merge_gap_joins_nearby_events():
    values = track([0.9, 0.9, 0.0, 0.9, 0.9, 0.0, 0.0, 0.0, 0.9])
    apart = detect_events(times(9), values, ["x"], 1.0, EventRules(threshold=0.5))
    assert [(e.start_s, e.end_s) for e in apart] == [(0.0, 2.0), (3.0, 5.0), (8.0, 9.0)]
    merged = detect_events(times(9), values, ["x"], 1.0, EventRules(threshold=0.5, merge_gap_s=1.0))
    assert [(e.start_s, e.end_s) for e in merged] == [(0.0, 5.0), (8.0, 9.0)]


def test_per_label_thresholds_and_background_labels():
    labels = ["glass breaking", "speech", "silence"]
    values = np.array([[0.4, 0.3, 0.9], [0.4, 0.7, 0.9], [0.1, 0.1, 0.9]])
    rules = EventRules(threshold=0.5, label_thresholds={"glass breaking": 0.35}, background=frozenset({"silence"}))
    events = detect_events(times(3), values, labels, 1.0, rules)
    assert {(e.label, e.start_s, e.end_s) for e in events} == {("glass breaking", 0.0, 2.0), ("speech", 1.0, 2.0)}


def test_event_end_is_clipped_to_the_recording():
    (event,) = detect_events([0.5, 1.5], track([0.9, 0.9]), ["x"], 1.0, EventRules(), duration_s=1.8)
    assert event.end_s == 1.8


def test_n_of_m_confirmation_and_cooldown():
    gate = AlertGate(["smoke alarm"], needed=2, window=3, cooldown_s=10.0)
    hops = [True, False, True, True, True, False, False, True, True]
    fired = [t for t, on in enumerate(hops) if gate.update(float(t), {"smoke alarm": on})]
    assert fired == [2]
    later = [t for t in range(13, 16) if gate.update(float(t), {"smoke alarm": True})]
    assert later == [13]


def test_gate_needs_sensible_n_and_m():
    with pytest.raises(ValueError):
        AlertGate(["x"], needed=4, window=3, cooldown_s=0)
