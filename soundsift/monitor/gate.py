"""N-of-M confirmation of live alerts, with a cooldown per label, and each label's ON/OFF state."""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence

import numpy as np


class AlertGate:
    """Live confirmation: a label alerts when it was on in at least ``needed`` of the last ``window``
    hops, then stays quiet for ``cooldown_s`` seconds (per label)."""

    def __init__(self, labels: Sequence[str], *, needed: int, window: int, cooldown_s: float) -> None:
        if not 1 <= needed <= window:
            raise ValueError("need 1 <= N <= M for N-of-M confirmation")
        self.needed, self.cooldown_s = needed, cooldown_s
        # (hop time, heard) per label: the times give the start of a confirmed sound.
        self._history: dict[str, deque[tuple[float, bool]]] = {label: deque(maxlen=window) for label in labels}
        self._last_alert: dict[str, float] = {}
        self.confirmed: dict[str, bool] = dict.fromkeys(labels, False)
        """Whether each label is heard in N of the last M hops now (cooldown or not)."""

    def update(self, now_s: float, on: Mapping[str, bool]) -> list[str]:
        """Record one hop's on/off per label; return the labels that alert now."""
        alerts = []
        for label, history in self._history.items():
            history.append((now_s, bool(on.get(label, False))))
            self.confirmed[label] = sum(heard for _, heard in history) >= self.needed
            cooled = now_s - self._last_alert.get(label, -np.inf) >= self.cooldown_s
            if self.confirmed[label] and cooled:
                self._last_alert[label] = now_s
                alerts.append(label)
        return alerts

    def first_heard_s(self, label: str) -> float | None:
        """The time of the earliest hop within the last M that heard ``label`` (None: none did)."""
        return next((time_s for time_s, heard in self._history[label] if heard), None)


class LabelStates:
    """Each label's state for home automation: ON as soon as it is confirmed, OFF once it has not been
    confirmed for ``hold_s`` seconds, so a sound that wavers around the threshold does not flap."""

    def __init__(self, labels: Sequence[str], *, hold_s: float) -> None:
        self.hold_s = hold_s
        self.on: dict[str, bool] = dict.fromkeys(labels, False)
        self._last_confirmed: dict[str, float] = {}

    def update(self, now_s: float, confirmed: Mapping[str, bool]) -> dict[str, bool]:
        """Record one hop; return the labels whose state changed, with their new state."""
        changed = {}
        for label, was_on in self.on.items():
            if confirmed.get(label, False):
                self._last_confirmed[label] = now_s
            is_on = now_s - self._last_confirmed.get(label, -np.inf) <= self.hold_s
            if is_on != was_on:
                self.on[label] = changed[label] = is_on
        return changed
