"""The "Long audio" tab: scores over time and the events found in them."""

from __future__ import annotations

from pathlib import Path

import gradio as gr
import pandas as pd

from soundsift.detection.events import EventRules, background_labels
from soundsift.detection.results import Detection
from soundsift.detection.windows import DetectOptions
from soundsift.i18n.page_text import message
from soundsift.serving.page.common import (
    PageProblem,
    as_page_problems,
    empty_table,
    open_upload,
    request_language,
    score_text,
)
from soundsift.serving.service import ClassificationService

EVENT_COLUMNS = ("col_label", "col_start", "col_end", "col_peak", "col_mean")


async def _never_disconnected() -> bool:
    # Gradio cancels a page event whose browser went away; the service needs no extra check here.
    return False


def build(service: ClassificationService, i18n: gr.I18n, upload_root: Path) -> None:
    async def detect(
        audio_path: str | None,
        labels: str,
        window: float,
        threshold: float,
        background: str,
        request: gr.Request,
    ) -> tuple[str, gr.LinePlot, pd.DataFrame]:
        language = request_language(request)
        try:
            return await run_detection(
                service, upload_root, language, audio_path, labels, window, threshold, background
            )
        except PageProblem as problem:
            columns = [message(language, key) for key in EVENT_COLUMNS]
            return message(language, "error", message=str(problem)), gr.LinePlot(value=None), empty_table(columns)

    with gr.Row(equal_height=False):
        with gr.Column(scale=1, min_width=300):
            gr.Markdown(i18n("long_audio"), elem_classes="heading")
            audio = gr.Audio(
                sources=["upload"], type="filepath", show_label=False, elem_id="long-audio", buttons=["download"]
            )
            labels = gr.Textbox(label=i18n("labels"), placeholder=i18n("labels_hint"), elem_id="long-labels")
            background = gr.Textbox(label=i18n("background"), placeholder=i18n("background_hint"))
            window = gr.Slider(1.0, 10.0, value=5.0, step=0.5, label=i18n("window"))
            threshold = gr.Slider(0.0, 1.0, value=0.5, step=0.01, label=i18n("event_threshold"))
            button = gr.Button(i18n("detect"), variant="primary", elem_id="detect-button")
        with gr.Column(scale=2, min_width=300):
            summary = gr.Markdown(elem_id="detect-summary")
            timeline = gr.LinePlot(
                x="time", y="score", color="label", label=i18n("timeline"), y_lim=[0, 1], height=300, elem_id="timeline"
            )
            events = gr.Dataframe(label=i18n("events"), interactive=False, elem_id="events-table", wrap=True)
    button.click(
        detect,
        inputs=[audio, labels, window, threshold, background],
        outputs=[summary, timeline, events],
        api_visibility="private",
    )


async def run_detection(
    service: ClassificationService,
    upload_root: Path,
    language: str,
    audio_path: str | None,
    labels: str,
    window: float,
    threshold: float,
    background: str,
) -> tuple[str, gr.LinePlot, pd.DataFrame]:
    if not audio_path:
        raise PageProblem(message(language, "no_recording"))
    if not labels or not labels.strip():
        raise PageProblem(message(language, "no_labels"))
    with as_page_problems("detection", language), open_upload(upload_root, audio_path, language) as upload:
        rules = EventRules(threshold=float(threshold), background=background_labels(background))
        options = DetectOptions(window_s=float(window), rules=rules)
        detection = await service.detect(upload, labels, options, disconnected=_never_disconnected)
    summary = message(language, "events_summary", count=len(detection.events), duration=f"{detection.duration_s:.1f}")
    return summary, score_curves(detection, language), event_table(detection, language)


def score_curves(detection: Detection, language: str) -> gr.LinePlot:
    rows = [
        ((window.start_s + window.end_s) / 2, label, window.scores[label])
        for window in detection.windows
        for label in detection.labels
    ]
    data = pd.DataFrame(rows, columns=["time", "label", "score"])
    return gr.LinePlot(
        value=data,
        x_title=message(language, "axis_time"),
        y_title=message(language, "axis_score"),
        color_title=message(language, "axis_label"),
    )


def event_table(detection: Detection, language: str) -> pd.DataFrame:
    rows = [
        [e.label, f"{e.start_s:.2f}", f"{e.end_s:.2f}", score_text(e.peak_score), score_text(e.mean_score)]
        for e in detection.events
    ]
    return pd.DataFrame(rows, columns=[message(language, key) for key in EVENT_COLUMNS])
