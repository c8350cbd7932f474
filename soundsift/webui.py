"""The web page (Gradio), mounted at / in the FastAPI app. Calls ClassificationService only."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import gradio as gr
import pandas as pd
from fastapi import FastAPI

from soundsift.errors import SoundsiftError
from soundsift.presets import PRESETS
from soundsift.service import ClassificationService, elapsed_ms

logger = logging.getLogger("soundsift.webui")
EXAMPLES = Path(__file__).parent / "examples"

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
        "smart_home": "Smart home safety",
        "office": "Office",
        "street": "Street",
        "nature": "Nature",
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
        "smart_home": "智能家居安全",
        "office": "办公室",
        "street": "街道",
        "nature": "自然",
    },
}

BILINGUAL = {key: f"{TEXT['en'][key]} · {TEXT['zh'][key]}" for key in ("audio", "labels")}

VERDICT = {
    "top": "**{label}** — confidence {confidence:.0%} · {duration:.1f} s of audio · {ms:.0f} ms",
    "uncertain": "⚠️ **Uncertain** — best guess **{label}** at {confidence:.0%} · {duration:.1f} s · {ms:.0f} ms",
    "none": "⚠️ **None of these labels** detected · {duration:.1f} s · {ms:.0f} ms",
    "silent": "🔇 The audio is (nearly) silent; the scores mean little.",
}


def build_ui(service: ClassificationService) -> tuple[gr.Blocks, gr.I18n]:
    i18n = gr.I18n(**TEXT)
    settings = service.settings

    async def classify(audio_path, labels, threshold, template, multi_label):
        return await run_classification(service, audio_path, labels, threshold, template, multi_label)

    with gr.Blocks(title="soundsift") as page:
        gr.Markdown(i18n("title"))
        with gr.Row():
            with gr.Column():
                # Gradio does not translate labels shown in the Examples header, so these two are bilingual.
                audio = gr.Audio(
                    sources=["upload", "microphone"], type="filepath", label=BILINGUAL["audio"], elem_id="audio-input"
                )
                labels = gr.Textbox(label=BILINGUAL["labels"], placeholder=i18n("labels_hint"), elem_id="labels-input")
                with gr.Row():
                    preset_buttons = {
                        name: gr.Button(i18n(name), size="sm", elem_id=f"preset-{name}") for name in PRESETS
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
        for name, button_for_preset in preset_buttons.items():
            button_for_preset.click(lambda preset=PRESETS[name]: preset, outputs=labels)
        button.click(
            classify,
            inputs=[audio, labels, threshold, template, multi_label],
            outputs=[verdict, table, chart],
            api_visibility="private",
        )
    return page, i18n


async def run_classification(service, audio_path, labels, threshold, template, multi_label):
    """One click: friendly gr.Error messages for anything the user can fix."""
    started = time.perf_counter()
    if not audio_path:
        raise gr.Error("Upload or record some audio first. / 请先上传或录制音频。")
    if not labels or not labels.strip():
        raise gr.Error("Type at least two labels, separated by commas. / 请至少输入两个标签，用逗号分隔。")
    try:
        prepared = await service.prepare_labels(
            labels, [template] if template and template.strip() else None, bool(multi_label)
        )
        result = await service.classify(
            Path(audio_path), prepared, source=Path(audio_path).name, threshold=float(threshold)
        )
    except SoundsiftError as error:
        raise gr.Error(_user_message(error)) from None
    except Exception:
        logger.exception("classification failed")
        raise gr.Error("Something went wrong on the server; please try again.") from None
    return _verdict(result, elapsed_ms(started)), _table(result), _chart(result)


def _user_message(error: SoundsiftError) -> str:
    message = str(error)
    if error.source:
        message = message.replace(f"{error.source}: ", "", 1)
    return message[0].upper() + message[1:]


def _verdict(result, ms: float) -> str:
    facts = {"label": result.top_label, "confidence": result.confidence, "duration": result.duration_s, "ms": ms}
    if result.top_label is None:
        text = VERDICT["none"].format(**facts)
    elif result.uncertain:
        text = VERDICT["uncertain"].format(**facts)
    else:
        text = VERDICT["top"].format(**facts)
    return text + ("\n\n" + VERDICT["silent"] if result.silent else "")


def _table(result) -> pd.DataFrame:
    return pd.DataFrame(
        [[s.label, round(s.score, 4), round(s.similarity, 4)] for s in result.scores],
        columns=["label", "score", "similarity"],
    )


def _chart(result) -> pd.DataFrame:
    return pd.DataFrame({"label": [s.label for s in result.scores], "score": [s.score for s in result.scores]})


def mount_ui(app: FastAPI, service: ClassificationService) -> None:
    page, i18n = build_ui(service)
    gr.mount_gradio_app(
        app,
        page,
        path="/",
        i18n=i18n,
        max_file_size=f"{service.settings.max_upload_mb:g}mb",
        show_error=True,
        footer_links=["api"],
    )
