"""N-of-M confirmation of live alerts, with a cooldown per label."""

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
        self._history: dict[str, deque[bool]] = {label: deque(maxlen=window) for label in labels}
        self._last_alert: dict[str, float] = {}

    def update(self, now_s: float, on: Mapping[str, bool]) -> list[str]:
        """Record one hop's on/off per label; return the labels that alert now."""
        alerts = []
        for label, history in self._history.items():
            history.append(bool(on.get(label, False)))
            cooled = now_s - self._last_alert.get(label, -np.inf) >= self.cooldown_s
            if sum(history) >= self.needed and cooled:
                self._last_alert[label] = now_s
                alerts.append(label)
        return alerts
