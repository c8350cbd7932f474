"""The "Live" tab: the browser streams the microphone; every second the last two seconds are
scored, and a label heard in 2 of the last 3 seconds becomes an event (the N-of-M rule of
`soundsift monitor`).

Each browser tab holds one bounded `LiveSession` (two seconds of audio, the last ten events) in
Gradio state, which Gradio drops when the tab closes; a stream also ends after STREAM_LIMIT_S.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, field

import gradio as gr
import numpy as np
import pandas as pd

from soundsift.core.audio import resample
from soundsift.core.results import LabelScore
from soundsift.core.scoring import ScoringOptions
from soundsift.i18n.page_text import message
from soundsift.monitor.gate import AlertGate
from soundsift.serving.page.common import (
    PageProblem,
    adapter_choices,
    as_page_problems,
    empty_table,
    request_language,
    score_text,
)
from soundsift.serving.service import ClassificationService, RequestLabels

logger = logging.getLogger("soundsift.page")

WINDOW_S = 2.0
HOP_S = 1.0
CONFIRM = (2, 3)
COOLDOWN_S = 5.0
STREAM_LIMIT_S = 600
SESSION_IDLE_S = 900
KEPT_EVENTS = 10


@dataclass
class LiveSession:
    """One browser tab's listening state, bounded: the last WINDOW_S of audio and KEPT_EVENTS events."""

    request: tuple[str, str | None]
    """The labels and adapter name the session was prepared for (a change prepares it again)."""
    prepared: RequestLabels
    gate: AlertGate
    sample_rate: int
    ring: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))
    heard_s: float = 0.0
    events: deque[tuple[float, str, float]] = field(default_factory=lambda: deque(maxlen=KEPT_EVENTS))
    last_scores: list[LabelScore] = field(default_factory=list)

    def add(self, samples: np.ndarray) -> None:
        self.heard_s += len(samples) / self.sample_rate
        window = round(WINDOW_S * self.sample_rate)
        self.ring = np.concatenate([self.ring, samples])[-window:]


def mono_float(chunk: np.ndarray) -> np.ndarray:
    """Gradio streams int16 (frames[, channels]); the model wants mono float32."""
    data = np.asarray(chunk)
    if np.issubdtype(data.dtype, np.integer):
        data = data.astype(np.float32) / float(np.iinfo(data.dtype).max)
    if data.ndim == 2:
        data = data.mean(axis=1)
    return data.astype(np.float32, copy=False)


def build(service: ClassificationService, i18n: gr.I18n) -> gr.Dropdown:
    """The tab; returns its "Taught sounds" choice, which the Teach tab refreshes."""

    async def listen(
        chunk: tuple[int, np.ndarray] | None,
        labels: str,
        adapter: str | None,
        threshold: float,
        session: LiveSession | None,
        request: gr.Request,
    ) -> tuple[LiveSession | None, str, pd.DataFrame, pd.DataFrame]:
        language = request_language(request)
        try:
            session = await step(service, session, chunk, (labels, adapter or None), float(threshold), language)
        except PageProblem as problem:
            columns = [message(language, key) for key in ("col_label", "col_score")]
            return session, message(language, "error", message=str(problem)), empty_table(columns), empty_table([])
        return session, *views(session, language)

    gr.Markdown(i18n("live_hint"), elem_classes="hint")
    with gr.Row(equal_height=False):
        with gr.Column(min_width=300):
            gr.Markdown(i18n("live_audio"), elem_classes="heading")
            audio = gr.Audio(sources=["microphone"], streaming=True, show_label=False, elem_id="live-audio")
            labels = gr.Textbox(label=i18n("live_labels"), placeholder=i18n("labels_hint"), elem_id="live-labels")
            adapter = gr.Dropdown(
                choices=adapter_choices(service), value="", label=i18n("adapter"), elem_id="live-adapter"
            )
            threshold = gr.Slider(0.0, 1.0, value=0.5, step=0.01, label=i18n("event_threshold"))
        with gr.Column(min_width=300):
            status = gr.Markdown(elem_id="live-status")
            scores = gr.Dataframe(label=i18n("live_scores"), interactive=False, elem_id="live-scores")
            events = gr.Dataframe(label=i18n("live_events"), interactive=False, elem_id="live-events")
    session = gr.State(None, time_to_live=SESSION_IDLE_S, delete_callback=_forget)
    audio.stream(
        listen,
        inputs=[audio, labels, adapter, threshold, session],
        outputs=[session, status, scores, events],
        stream_every=HOP_S,
        time_limit=STREAM_LIMIT_S,
        concurrency_limit=None,
        api_visibility="private",
    )
    return adapter


async def step(
    service: ClassificationService,
    session: LiveSession | None,
    chunk: tuple[int, np.ndarray] | None,
    request: tuple[str, str | None],
    threshold: float,
    language: str,
) -> LiveSession:
    labels, adapter = request
    if (not labels or not labels.strip()) and not adapter:
        raise PageProblem(message(language, "no_labels"))
    if session is None or session.request != request:
        with as_page_problems("live labels", language):
            prepared = await service.prepare_labels(labels or None, ScoringOptions(), adapter)
        needed, window = CONFIRM
        gate = AlertGate(prepared.names, needed=needed, window=window, cooldown_s=COOLDOWN_S)
        session = LiveSession(request, prepared, gate, service.classifier.sample_rate)
    if chunk is None:
        return session
    rate, data = chunk
    session.add(resample(mono_float(data), int(rate), session.sample_rate))
    with as_page_problems("live scoring", language):
        result = await service.classify_samples(session.ring, session.sample_rate, session.prepared, ScoringOptions())
    by_label = {score.label: score.score for score in result.scores}
    for label in session.gate.update(session.heard_s, {name: by_label[name] >= threshold for name in by_label}):
        session.events.appendleft((session.heard_s, label, by_label[label]))
    session.last_scores = result.scores
    return session


def views(session: LiveSession, language: str) -> tuple[str, pd.DataFrame, pd.DataFrame]:
    scores = pd.DataFrame(
        [[score.label, score_text(score.score)] for score in session.last_scores],
        columns=[message(language, "col_label"), message(language, "col_score")],
    )
    events = pd.DataFrame(
        [[f"{at:.0f} s", label, score_text(score)] for at, label, score in session.events],
        columns=[message(language, "col_time"), message(language, "col_label"), message(language, "col_score")],
    )
    status = message(language, "listening", seconds=f"{session.heard_s:.0f}", time=time.strftime("%H:%M:%S"))
    return status, scores, events


def _forget(session: LiveSession | None) -> None:
    if session is not None:
        logger.debug("live session ended after %.0f s", session.heard_s)
