"""The web page (Gradio), mounted at / in the FastAPI app. Calls ClassificationService only."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import gradio as gr
import pandas as pd
from fastapi import FastAPI

from soundsift.core.results import Classification

if TYPE_CHECKING:  # matplotlib is imported when a timeline is drawn
    from matplotlib.figure import Figure
from soundsift.detection.windows import DetectOptions
from soundsift.errors import SoundsiftError
from soundsift.i18n.presets import PRESETS, PRESETS_ZH
from soundsift.serving.service import ClassificationService, Upload, elapsed_ms

logger = logging.getLogger("soundsift.serving.page")
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
# Never readable through the page, whatever else is configured.
BLOCKED_PATHS = ("/proc", "/sys", "/dev", "/etc", "/root", "/var", "/boot", "/run")

TEXT = {
    "en": {
        "title": "# soundsift\nZero-shot sound classification: upload or record a sound, name the labels, "
        "press Classify.",
        "audio": "Audio (upload MP3/WAV/FLAC/OGG/M4A/WebM, or record)",
        "labels": "Labels (comma-separated; | joins synonyms)",
        "labels_hint": "dog barking | dog bark, siren, rain",
        "presets": "Presets",
        "threshold": "Uncertainty threshold",
        "template": "Prompt template (optional, {} is the label)",
        "multi": "Multi-label (several sounds, or none)",
        "classify": "Classify",
        "verdict": "Result",
        "table": "Scores",
        "chart": "Score by label",
        "examples": "Example clips",
        "classify_tab": "Classify a sound",
        "long_tab": "Long recording",
        "long_audio": "Long recording (upload)",
        "window": "Window (s)",
        "event_threshold": "Event threshold",
        "background": "Background labels (optional, never reported as events)",
        "detect": "Find events",
        "timeline": "Timeline",
        "events": "Events",
        "smart_home": "Smart home safety",
        "office": "Office",
        "street": "Street",
        "nature": "Nature",
        "moderation": "Moderation",
        "classroom": "Classroom",
    },
    "zh": {
        "title": "# soundsift\n零样本声音分类：上传或录制一段声音，写下标签，点击“分类”。",
        "audio": "音频（上传 MP3/WAV/FLAC/OGG/M4A/WebM，或录音）",
        "labels": "标签（用逗号分隔；| 连接同义词）",
        "labels_hint": "狗叫声, 警笛声, 雨声",
        "presets": "预设标签",
        "threshold": "不确定阈值",
        "template": "提示模板（可选，{} 代表标签）",
        "multi": "多标签（可能有多种声音，或没有）",
        "classify": "分类",
        "verdict": "结果",
        "table": "得分",
        "chart": "各标签得分",
        "examples": "示例音频",
        "classify_tab": "声音分类",
        "long_tab": "长录音",
        "long_audio": "长录音（上传）",
        "window": "窗口（秒）",
        "event_threshold": "事件阈值",
        "background": "背景标签（可选，不作为事件报告）",
        "detect": "查找事件",
        "timeline": "时间线",
        "events": "事件",
        "smart_home": "智能家居安全",
        "office": "办公室",
        "street": "街道",
        "nature": "自然",
        "moderation": "内容审核",
        "classroom": "课堂",
    },
}

BILINGUAL = {key: f"{TEXT['en'][key]} · {TEXT['zh'][key]}" for key in ("audio", "labels")}

VERDICT = {
    "top": "**{label}** — confidence {confidence:.0%} · {duration:.1f} s of audio · {ms:.0f} ms",
    "uncertain": "⚠️ **Uncertain** — best guess **{label}** at {confidence:.0%} · {duration:.1f} s · {ms:.0f} ms",
    "none": "⚠️ **None of these labels** detected · {duration:.1f} s · {ms:.0f} ms",
    "silent": "🔇 The audio is (nearly) silent; the scores mean little.",
}


def build_ui(service: ClassificationService, upload_root: Path) -> tuple[gr.Blocks, gr.I18n]:
    i18n = gr.I18n(**TEXT)
    with gr.Blocks(title="soundsift") as page:
        gr.Markdown(i18n("title"))
        with gr.Tab(i18n("classify_tab")):
            _classify_tab(service, i18n, upload_root)
        with gr.Tab(i18n("long_tab"), elem_id="long-tab"):
            _long_recording_tab(service, i18n, upload_root)
    return page, i18n


def _classify_tab(service: ClassificationService, i18n: gr.I18n, upload_root: Path) -> None:
    settings = service.model_settings

    async def classify(
        audio_path: str | None, labels: str, threshold: float, template: str, multi_label: bool
    ) -> tuple[str, pd.DataFrame, pd.DataFrame]:
        return await run_classification(service, upload_root, audio_path, labels, threshold, template, multi_label)

    with gr.Row():
        with gr.Column():
            # Gradio does not translate labels shown in the Examples header, so these two are bilingual.
            audio = gr.Audio(
                sources=["upload", "microphone"], type="filepath", label=BILINGUAL["audio"], elem_id="audio-input"
            )
            labels = gr.Textbox(label=BILINGUAL["labels"], placeholder=i18n("labels_hint"), elem_id="labels-input")
            with gr.Row():
                preset_buttons = {name: gr.Button(i18n(name), size="sm", elem_id=f"preset-{name}") for name in PRESETS}
            with gr.Row():
                preset_buttons_zh = {
                    name: gr.Button(f"{TEXT['zh'][name]}（中文）", size="sm", elem_id=f"preset-{name}_zh")
                    for name in PRESETS_ZH
                }
            threshold = gr.Slider(0.0, 1.0, value=settings.threshold, step=0.01, label=i18n("threshold"))
            template = gr.Textbox(label=i18n("template"), placeholder=settings.templates[0])
            multi_label = gr.Checkbox(label=i18n("multi"), value=False)
            button = gr.Button(i18n("classify"), variant="primary", elem_id="classify-button")
        with gr.Column():
            verdict = gr.Markdown(elem_id="verdict")
            chart = gr.BarPlot(x="label", y="score", label=i18n("chart"), sort="-y", y_lim=[0, 1])
            table = gr.Dataframe(
                headers=["label", "score", "similarity"],
                label=i18n("table"),
                elem_id="results-table",
                interactive=False,
            )
    examples = sorted(EXAMPLES.glob("*.ogg"))
    if examples:
        gr.Examples(
            examples=[[str(path), "siren, smoke alarm, doorbell, rain, speech"] for path in examples],
            inputs=[audio, labels],
            label=i18n("examples"),
        )
    for name, preset_button in preset_buttons.items():
        preset_button.click(lambda preset=PRESETS[name]: preset, outputs=labels)
    for name, preset_button in preset_buttons_zh.items():
        preset_button.click(lambda preset=PRESETS_ZH[name]: preset, outputs=labels)
    button.click(
        classify,
        inputs=[audio, labels, threshold, template, multi_label],
        outputs=[verdict, table, chart],
        api_visibility="private",
    )


def _long_recording_tab(service: ClassificationService, i18n: gr.I18n, upload_root: Path) -> None:
    async def detect(
        audio_path: str | None, labels: str, window: float, threshold: float, background: str
    ) -> tuple[Figure, pd.DataFrame]:
        return await run_detection(service, upload_root, audio_path, labels, window, threshold, background)

    with gr.Row():
        with gr.Column(scale=1):
            audio = gr.Audio(sources=["upload"], type="filepath", label=i18n("long_audio"), elem_id="long-audio")
            labels = gr.Textbox(label=i18n("labels"), placeholder=i18n("labels_hint"), elem_id="long-labels")
            background = gr.Textbox(label=i18n("background"), placeholder="silence, speech")
            window = gr.Slider(1.0, 10.0, value=5.0, step=0.5, label=i18n("window"))
            threshold = gr.Slider(0.0, 1.0, value=0.5, step=0.01, label=i18n("event_threshold"))
            button = gr.Button(i18n("detect"), variant="primary", elem_id="detect-button")
        with gr.Column(scale=2):
            plot = gr.Plot(label=i18n("timeline"), elem_id="timeline")
            events = gr.Dataframe(
                headers=["label", "start_s", "end_s", "peak_score", "mean_score"],
                label=i18n("events"),
                interactive=False,
                elem_id="events-table",
            )
    button.click(
        detect, inputs=[audio, labels, window, threshold, background], outputs=[plot, events], api_visibility="private"
    )


async def run_detection(
    service: ClassificationService,
    upload_root: Path,
    audio_path: str | None,
    labels: str,
    window: float,
    threshold: float,
    background: str,
) -> tuple[Figure, pd.DataFrame]:
    from soundsift.detection.outputs import plot_timeline

    if not audio_path:
        raise gr.Error("Upload a recording first. / 请先上传录音。")
    if not labels or not labels.strip():
        raise gr.Error("Type at least two labels, separated by commas. / 请至少输入两个标签，用逗号分隔。")
    options = DetectOptions(window_s=float(window), threshold=float(threshold), background=background or None)
    with friendly_errors("detection"), open_upload(upload_root, audio_path) as upload:
        detection = await service.detect(upload, labels, options, disconnected=_never)
    rows = pd.DataFrame(
        [e.model_dump() for e in detection.events], columns=["label", "start_s", "end_s", "peak_score", "mean_score"]
    )
    return plot_timeline(detection), rows.round(3)


async def run_classification(
    service: ClassificationService,
    upload_root: Path,
    audio_path: str | None,
    labels: str,
    threshold: float,
    template: str,
    multi_label: bool,
) -> tuple[str, pd.DataFrame, pd.DataFrame]:
    """One click: friendly gr.Error messages for anything the user can fix."""
    started = time.perf_counter()
    if not audio_path:
        raise gr.Error("Upload or record some audio first. / 请先上传或录制音频。")
    if not labels or not labels.strip():
        raise gr.Error("Type at least two labels, separated by commas. / 请至少输入两个标签，用逗号分隔。")
    with friendly_errors("classification"), open_upload(upload_root, audio_path) as upload:
        prepared = await service.prepare_labels(
            labels, [template] if template and template.strip() else None, bool(multi_label)
        )
        result = await service.classify(upload, prepared, threshold=float(threshold))
    return _verdict(result, elapsed_ms(started)), _table(result), _chart(result)


async def _never() -> bool:
    return False


@contextlib.contextmanager
def open_upload(upload_root: Path, audio_path: str) -> Iterator[Upload]:
    """The page's uploaded file, opened for decoding. Gradio hands over a path; it must be a regular
    file inside the upload folder (the HTTP guard already checked the request; this is the second lock)."""
    real = Path(os.path.realpath(audio_path))
    if not real.is_relative_to(upload_root) or not real.is_file():
        raise gr.Error("Upload the file again. / 请重新上传文件。")
    with open(real, "rb") as handle:
        yield Upload.of(handle, real.name)


@contextlib.contextmanager
def friendly_errors(action: str) -> Iterator[None]:
    """Errors the user can fix become a plain gr.Error message; anything else is logged, never shown."""
    try:
        yield
    except SoundsiftError as error:
        raise gr.Error(_user_message(error)) from None
    except Exception:
        logger.exception("%s failed", action)
        raise gr.Error("Something went wrong on the server; please try again.") from None


def _user_message(error: SoundsiftError) -> str:
    message = str(error)
    if error.source:
        message = message.replace(f"{error.source}: ", "", 1)
    return message[0].upper() + message[1:]


def _verdict(result: Classification, ms: float) -> str:
    facts = {"label": result.top_label, "confidence": result.confidence, "duration": result.duration_s, "ms": ms}
    if result.top_label is None:
        text = VERDICT["none"].format(**facts)
    elif result.uncertain:
        text = VERDICT["uncertain"].format(**facts)
    else:
        text = VERDICT["top"].format(**facts)
    notes = ([VERDICT["silent"]] if result.silent else []) + [f"⚠️ {warning}" for warning in result.warnings]
    return "\n\n".join([text, *notes])


def _table(result: Classification) -> pd.DataFrame:
    return pd.DataFrame(
        [[s.label, round(s.score, 4), round(s.similarity, 4)] for s in result.scores],
        columns=["label", "score", "similarity"],
    )


def _chart(result: Classification) -> pd.DataFrame:
    return pd.DataFrame({"label": [s.label for s in result.scores], "score": [s.score for s in result.scores]})


def mount_ui(app: FastAPI, service: ClassificationService, upload_root: Path) -> None:
    page, i18n = build_ui(service, upload_root)
    # Gradio's queue is unbounded by default; the service admits at most max_queue requests anyway.
    page.queue(default_concurrency_limit=service.settings.max_queue, max_size=service.settings.max_queue)
    gr.mount_gradio_app(
        app,
        page,
        path="/",
        i18n=i18n,
        max_file_size=f"{service.settings.max_upload_mb:g}mb",
        show_error=True,
        footer_links=["api"],
        blocked_paths=[path for path in BLOCKED_PATHS if Path(path).exists()],
    )
    # gr.mount_gradio_app never marks the page as launched, and Gradio skips its own check that a
    # file value names an uploaded file until it is (processing_utils._check_allowed): without this,
    # any server path was accepted. The HTTP guard checks the same rule before Gradio sees a request.
    page.has_launched = True
