"""The "Classify" tab: one clip, typed or preset labels, a verdict, a chart and a table."""

from __future__ import annotations

import json
import time
from pathlib import Path

import gradio as gr
import pandas as pd

from soundsift.core.results import Classification
from soundsift.core.scoring import ScoringOptions
from soundsift.i18n.page_text import message
from soundsift.i18n.presets import PRESETS, PRESETS_ZH
from soundsift.serving.page.common import (
    PageProblem,
    adapter_choices,
    as_page_problems,
    empty_table,
    open_upload,
    request_language,
    score_text,
)
from soundsift.serving.service import ClassificationService, elapsed_ms

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
EXAMPLE_ICONS = {"doorbell": "🔔", "rain": "🌧️", "siren": "🚨", "smoke-alarm": "🔥", "speech": "🗣️"}
# True in the browser while the microphone records (Gradio shows its stop button then).
IS_RECORDING_JS = """
(...inputs) => {
  const stop = document.querySelector('#audio-input .stop-button');
  const recording = !!stop && getComputedStyle(stop).display !== 'none';
  return [...inputs.slice(0, -1), recording];
}
"""


def preset_js(name: str) -> str:
    """Fill the labels in the browser's language at once, with no server round trip (a round trip
    let a quick Classify click send the labels box before the preset had filled it)."""
    english, chinese = json.dumps(PRESETS[name]), json.dumps(PRESETS_ZH[name])
    return f"() => ((navigator.language || '').toLowerCase().startsWith('zh') ? {chinese} : {english})"


def example_labels_js() -> str:
    """An example clip fills the labels too (in the page's language) when none are typed yet."""
    return preset_js("smart_home").replace("() =>", "(current) => (current && current.trim()) ? current :", 1)


def build(service: ClassificationService, i18n: gr.I18n, upload_root: Path) -> gr.Dropdown:
    """The tab; returns the "Taught sounds" choice, which the Teach tab refreshes."""
    settings = service.model_settings

    async def classify(
        audio_path: str | None,
        labels: str,
        threshold: float,
        min_margin: float,
        template: str,
        multi_label: bool,
        label_threshold: float,
        adapter: str | None,
        model: str | None,
        recording: bool,
        request: gr.Request,
    ) -> tuple[str, pd.DataFrame, gr.BarPlot]:
        language = request_language(request)
        try:
            with as_page_problems("classification", language):
                scoring = ScoringOptions(
                    templates=(template,) if template and template.strip() else None,
                    multi_label=bool(multi_label),
                    threshold=float(threshold),
                    min_margin=float(min_margin),
                    label_thresholds=float(label_threshold) if multi_label else None,
                )
            return await run_classification(
                service, upload_root, language, audio_path, labels, scoring, adapter or None, model or None, recording
            )
        except PageProblem as problem:
            columns = [message(language, key) for key in ("col_label", "col_score", "col_similarity")]
            return message(language, "error", message=str(problem)), empty_table(columns), gr.BarPlot(value=None)

    with gr.Row(equal_height=False):
        with gr.Column(min_width=300):
            # Gradio shows an I18n label on a loaded audio player as "[object Object]": the heading is ours.
            gr.Markdown(i18n("audio_heading"), elem_classes="heading")
            audio = gr.Audio(
                sources=["upload", "microphone"],
                type="filepath",
                show_label=False,
                elem_id="audio-input",
                buttons=["download"],
            )
            labels = gr.Textbox(label=i18n("labels"), placeholder=i18n("labels_hint"), elem_id="labels-input")
            adapter = gr.Dropdown(
                choices=adapter_choices(service),
                value="",
                label=i18n("adapter"),
                elem_id="adapter-choice",
                interactive=True,
            )
            models = model_choices(service)
            model = gr.Dropdown(
                choices=models,
                value=models[0],
                label=i18n("model_choice"),
                elem_id="model-choice",
                interactive=True,
                visible=len(models) > 1,
            )
            gr.Markdown(i18n("presets"), elem_classes="hint")
            with gr.Row(elem_classes="presets"):
                presets = {
                    name: gr.Button(i18n(name), size="sm", elem_id=f"preset-{name}", scale=0, min_width=60)
                    for name in PRESETS
                }
            with gr.Accordion(i18n("advanced"), open=False):
                threshold = gr.Slider(
                    0.0, 1.0, value=settings.threshold, step=0.01, label=i18n("threshold"), elem_id="threshold"
                )
                min_margin = gr.Slider(
                    0.0, 1.0, value=settings.min_margin, step=0.01, label=i18n("min_margin"), elem_id="min-margin"
                )
                template = gr.Textbox(label=i18n("template"), placeholder=i18n("template_hint"))
                multi_label = gr.Checkbox(label=i18n("multi"), value=False)
                label_threshold = gr.Slider(
                    -1.0, 1.0, value=settings.label_threshold, step=0.01, label=i18n("label_threshold")
                )
            recording = gr.Checkbox(visible=False)
            button = gr.Button(i18n("classify"), variant="primary", elem_id="classify-button")
        with gr.Column(min_width=300):
            verdict = gr.Markdown(elem_id="verdict")
            chart = gr.BarPlot(
                x="label",
                y="score",
                label=i18n("chart"),
                sort="-y",
                y_lim=[0, 1],
                x_label_angle=-30,
                height=280,
                elem_id="score-chart",
            )
            table = gr.Dataframe(
                label=i18n("table"),
                elem_id="results-table",
                interactive=False,
                wrap=True,
                column_widths=["60%", "20%", "20%"],  # the scores stay on screen on a phone
            )
    clips = sorted(EXAMPLES.glob("*.ogg"))
    if clips:
        examples = gr.Examples(
            examples=[[str(path)] for path in clips],
            inputs=[audio],
            label=i18n("examples"),
            # Example labels cannot be translated by Gradio; a picture of the sound needs no language.
            example_labels=[EXAMPLE_ICONS.get(path.stem, "🔊") for path in clips],
        )
        examples.dataset.click(None, inputs=[labels], outputs=[labels], js=example_labels_js())
    for name, preset in presets.items():
        preset.click(None, outputs=[labels], js=preset_js(name))
    button.click(
        classify,
        inputs=[
            audio,
            labels,
            threshold,
            min_margin,
            template,
            multi_label,
            label_threshold,
            adapter,
            model,
            recording,
        ],
        outputs=[verdict, table, chart],
        js=IS_RECORDING_JS,
        api_visibility="private",
    )
    return adapter


async def run_classification(
    service: ClassificationService,
    upload_root: Path,
    language: str,
    audio_path: str | None,
    labels: str,
    scoring: ScoringOptions,
    adapter: str | None,
    model: str | None,
    recording: bool,
) -> tuple[str, pd.DataFrame, gr.BarPlot]:
    started = time.perf_counter()
    if recording:
        raise PageProblem(message(language, "still_recording"))
    if not audio_path:
        raise PageProblem(message(language, "no_audio"))
    if (not labels or not labels.strip()) and not adapter:
        raise PageProblem(message(language, "no_labels"))
    with as_page_problems("classification", language), open_upload(upload_root, audio_path, language) as upload:
        prepared = await service.prepare_labels(labels or None, scoring, adapter, model=model)
        result = await service.classify(upload, prepared, scoring)
    names = {served.classifier.model_id: served.name for served in service.models.values()}
    return (
        verdict(result, elapsed_ms(started), language, names),
        score_table(result, language),
        score_chart(result, language),
    )


def verdict(result: Classification, ms: float, language: str, names: dict[str, str]) -> str:
    """The answer in words; an ensemble's members by their served ``names``."""
    facts = {
        "label": result.top_label,
        "confidence": f"{result.confidence:.0%}",
        "duration": f"{result.duration_s:.1f}",
        "ms": f"{ms:.0f}",
    }
    key = "none" if result.top_label is None else "uncertain" if result.uncertain else "top"
    notes = ([message(language, "silent")] if result.silent else []) + [f"⚠️ {w}" for w in result.warnings]
    if result.members is not None:
        answers = ", ".join(
            f"{names.get(member.model, member.model)} → {member.top_label or '—'}" for member in result.members
        )
        notes.insert(0, message(language, "members", answers=answers, agreement=f"{result.agreement or 0:.0%}"))
    return "\n\n".join([message(language, key, **facts), *notes])


def model_choices(service: ClassificationService) -> list[str]:
    """The served models by name, the default first, then (with two or more) all of them as one ensemble."""
    names = list(service.models)
    return [*names, "+".join(names)] if len(names) > 1 else names


def score_table(result: Classification, language: str) -> pd.DataFrame:
    columns = [message(language, key) for key in ("col_label", "col_score", "col_similarity")]
    rows = [[s.label, score_text(s.score), score_text(s.similarity)] for s in result.scores]
    return pd.DataFrame(rows, columns=columns)


def score_chart(result: Classification, language: str) -> gr.BarPlot:
    data = pd.DataFrame({"label": [s.label for s in result.scores], "score": [s.score for s in result.scores]})
    return gr.BarPlot(value=data, x_title=message(language, "axis_label"), y_title=message(language, "axis_score"))
