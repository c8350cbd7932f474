"""Turning per-window score tracks into sound events. Pure functions.

A track holds one score per window for each label; window i is centred at ``times[i]`` and windows are
``hop_s`` apart. An event starts when a label's (smoothed) score rises to its on-threshold and ends
when it falls below its off-threshold (hysteresis). Its span is from half a hop before the first
active window's centre to half a hop after the last one's, so onsets and offsets are exact to one
hop; an event that reaches the first or last window extends to the recording's start or end.
Events shorter than ``min_duration_s`` are dropped after events of the same label closer than
``merge_gap_s`` have been merged. Background labels compete in the scores but never make events.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from soundsift.core.labels import label_names
from soundsift.errors import OptionsError


@dataclass(frozen=True)
class EventRules:
    """How score tracks become events (see the module's docstring); validated when made."""

    threshold: float = 0.5
    off_threshold: float | None = None
    label_thresholds: Mapping[str, float] = field(default_factory=dict)
    smoothing_windows: int = 1
    min_duration_s: float = 0.0
    merge_gap_s: float = 0.0
    background: tuple[str, ...] = ()
    """Labels that compete in the scores but make no events (`background_labels` reads them)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "label_thresholds", dict(self.label_thresholds))
        object.__setattr__(self, "background", tuple(self.background))
        for name, value in [("threshold", self.threshold), ("off_threshold", self.off_threshold)]:
            _check(name, value, 0.0, 1.0)
        for label, value in self.label_thresholds.items():
            _check(f"the threshold of {label!r}", value, 0.0, 1.0)
        _check("smoothing_windows", self.smoothing_windows, 1, 1000)
        _check("min_duration_s", self.min_duration_s, 0.0, 86_400.0)
        _check("merge_gap_s", self.merge_gap_s, 0.0, 86_400.0)

    def on_off(self, label: str) -> tuple[float, float]:
        on = self.label_thresholds.get(label, self.threshold)
        off = self.off_threshold if self.off_threshold is not None else on
        return on, min(off, on)


def background_labels(background: str | Sequence[str] | None) -> tuple[str, ...]:
    """Background labels as given by a user: a comma-separated string or a list, parsed like a
    label set (the API's form field, the page's text box and `detect()`'s keyword all read them)."""
    return tuple(label_names(background)) if background else ()


def _check(name: str, value: float | None, low: float, high: float) -> None:
    if value is not None and not (isinstance(value, (int, float)) and low <= value <= high):
        raise OptionsError(f"{name} must be from {low:g} to {high:g}, not {value!r}")


@dataclass(frozen=True)
class Event:
    label: str
    start_s: float
    end_s: float
    peak_score: float
    mean_score: float

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


def smooth(track: np.ndarray, windows: int) -> np.ndarray:
    """Centred moving average over ``windows`` windows (odd counts keep events in place)."""
    if windows <= 1 or len(track) == 0:
        return track.astype(float)
    kernel = np.ones(windows) / windows
    padded = np.pad(track.astype(float), (windows // 2, windows - 1 - windows // 2), mode="edge")
    return np.convolve(padded, kernel, mode="valid")


def active_runs(track: np.ndarray, on: float, off: float) -> list[tuple[int, int]]:
    """Index ranges [first, last] where the track is on, with hysteresis."""
    runs, start = [], None
    for index, value in enumerate(track):
        if start is None and value >= on:
            start = index
        elif start is not None and value < off:
            runs.append((start, index - 1))
            start = None
    if start is not None:
        runs.append((start, len(track) - 1))
    return runs


def detect_events(
    centres: Sequence[float],
    scores: np.ndarray,
    labels: Sequence[str],
    hop_s: float,
    rules: EventRules,
    *,
    duration_s: float | None = None,
) -> list[Event]:
    """Events from a (windows, labels) score matrix, sorted by start time then label; window i is
    centred at ``centres[i]``."""
    times = np.asarray(centres, dtype=float)
    events: list[Event] = []
    for column, label in enumerate(labels):
        if label in rules.background:
            continue
        raw = scores[:, column]
        smoothed = smooth(raw, rules.smoothing_windows)
        on, off = rules.on_off(label)
        runs = _merge(
            [(first, last) for first, last in active_runs(smoothed, on, off)], times, hop_s, rules.merge_gap_s
        )
        for first, last in runs:
            start = 0.0 if first == 0 else max(0.0, times[first] - hop_s / 2)
            end = times[last] + hop_s / 2
            if duration_s is not None:
                end = duration_s if last == len(times) - 1 else min(end, duration_s)
            if end - start + 1e-9 < rules.min_duration_s:
                continue
            segment = raw[first : last + 1]
            events.append(Event(label, round(start, 3), round(end, 3), float(segment.max()), float(segment.mean())))
    return sorted(events, key=lambda event: (event.start_s, event.label))


def _merge(runs: list[tuple[int, int]], times: np.ndarray, hop_s: float, gap_s: float) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for first, last in runs:
        if merged:
            gap = (times[first] - hop_s / 2) - (times[merged[-1][1]] + hop_s / 2)
            if gap <= gap_s + 1e-9:
                merged[-1] = (merged[-1][0], last)
                continue
        merged.append((first, last))
    return merged
