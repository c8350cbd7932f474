"""Every string the web page shows, in English and Chinese.

Component labels are translated in the browser (Gradio's I18n, by the browser's language); what the
server writes into results (verdicts, table headers, axis titles, errors) is picked here by the
request's Accept-Language, so both halves of the page speak the same language. Keys that start
with "audio." replace Gradio's own texts (e.g. the message when the microphone is not allowed).
"""

from __future__ import annotations

LANGUAGES = ("en", "zh")

TEXT: dict[str, dict[str, str]] = {
    "en": {
        "title": "# soundsift\nName the sounds you are listening for, then upload, record or stream audio.",
        "classify_tab": "Classify",
        "long_tab": "Long audio",
        "live_tab": "Live",
        "audio_heading": "**Audio** — MP3, WAV, FLAC, OGG, M4A or WebM, or record with the microphone",
        "labels": "Labels",
        "labels_hint": "dog barking, siren, rain — commas between labels, | between synonyms",
        "presets": "Presets (fill the labels in this page's language)",
        "advanced": "Options",
        "threshold": "Uncertainty threshold",
        "template": "Prompt template ({} is the label; the model reads English)",
        "template_hint": "This is a sound of {}.",
        "multi": "Multi-label (several sounds, or none)",
        "classify": "Classify",
        "verdict": "Result",
        "chart": "Score by label",
        "table": "Scores",
        "examples": "Example clips",
        "long_audio": "**Long recording** — upload a file",
        "background": "Background labels (optional; they compete but are never events)",
        "background_hint": "speech, silence",
        "window": "Window (s)",
        "event_threshold": "Event threshold",
        "detect": "Find events",
        "timeline": "Scores over time",
        "events": "Events",
        "live_audio": "**Microphone**",
        "live_hint": "Press Record: the last 2 s are scored every second; a label must be heard in 2 of 3 "
        "seconds to become an event.",
        "live_labels": "Labels to listen for",
        "live_scores": "Latest scores",
        "live_events": "Latest events",
        "smart_home": "Smart home safety",
        "office": "Office",
        "street": "Street",
        "nature": "Nature",
        "moderation": "Moderation",
        "classroom": "Classroom",
        "audio.no_microphone": "No microphone available: allow this page to use the microphone (the icon at the "
        "left of the address bar), then reload.",
        "audio.allow_recording_access": "The microphone is blocked: allow this page to use it (the icon at the left "
        "of the address bar), then reload.",
    },
    "zh": {
        "title": "# soundsift\n写下要识别的声音，然后上传、录制或实时收听音频。",
        "classify_tab": "声音分类",
        "long_tab": "长录音",
        "live_tab": "实时收听",
        "audio_heading": "**音频** — MP3、WAV、FLAC、OGG、M4A 或 WebM，也可以用麦克风录音",
        "labels": "标签",
        "labels_hint": "狗叫声, 警笛声, 雨声（标签之间用逗号，同义词之间用 |）",
        "presets": "预设标签（按本页语言填写）",
        "advanced": "选项",
        "threshold": "不确定阈值",
        "template": "提示模板（{} 代表标签；模型读英文）",
        "template_hint": "This is a sound of {}.",
        "multi": "多标签（可能有多种声音，或没有）",
        "classify": "分类",
        "verdict": "结果",
        "chart": "各标签得分",
        "table": "得分",
        "examples": "示例音频",
        "long_audio": "**长录音** — 上传文件",
        "background": "背景标签（可选；参与比较，但不作为事件报告）",
        "background_hint": "说话声, 安静",
        "window": "窗口（秒）",
        "event_threshold": "事件阈值",
        "detect": "查找事件",
        "timeline": "得分随时间变化",
        "events": "事件",
        "live_audio": "**麦克风**",
        "live_hint": "点击录音：每秒为最近 2 秒打分；一个标签在 3 秒中有 2 秒被听到，才算一个事件。",
        "live_labels": "要收听的标签",
        "live_scores": "最新得分",
        "live_events": "最近事件",
        "smart_home": "智能家居安全",
        "office": "办公室",
        "street": "街道",
        "nature": "自然",
        "moderation": "内容审核",
        "classroom": "课堂",
        "audio.no_microphone": "没有可用的麦克风：请允许本页使用麦克风（地址栏左侧的图标），然后刷新页面。",
        "audio.allow_recording_access": "麦克风被阻止：请允许本页使用麦克风（地址栏左侧的图标），然后刷新页面。",
    },
}

# What the server writes into results, in the request's language.
MESSAGES: dict[str, dict[str, str]] = {
    "en": {
        "top": "**{label}** — confidence {confidence} · {duration} s of audio · {ms} ms",
        "uncertain": "⚠️ **Uncertain** — best guess **{label}** at {confidence} · {duration} s · {ms} ms",
        "none": "⚠️ **None of these labels** was heard · {duration} s · {ms} ms",
        "silent": "🔇 The audio is (nearly) silent; the scores mean little.",
        "error": "❌ {message}",
        "no_audio": "Upload or record some audio first.",
        "still_recording": "The recording is still running: press Stop, then Classify.",
        "no_labels": "Type at least two labels, separated by commas (or press a preset).",
        "no_recording": "Upload a recording first.",
        "upload_again": "Upload the file again.",
        "server_error": "Something went wrong on the server; please try again.",
        "busy": "The server is busy; please try again in a moment.",
        "col_label": "label",
        "col_score": "score",
        "col_similarity": "similarity",
        "col_start": "start (s)",
        "col_end": "end (s)",
        "col_peak": "peak score",
        "col_mean": "mean score",
        "col_time": "time",
        "axis_time": "time (s)",
        "axis_score": "score",
        "axis_label": "label",
        "events_summary": "{count} events in {duration} s",
        "listening": "Listening… {seconds} s heard, last scored at {time}",
    },
    "zh": {
        "top": "**{label}** — 置信度 {confidence} · 音频 {duration} 秒 · {ms} 毫秒",
        "uncertain": "⚠️ **不确定** — 最可能是 **{label}**（{confidence}）· {duration} 秒 · {ms} 毫秒",
        "none": "⚠️ **没有听到这些标签中的任何一个** · {duration} 秒 · {ms} 毫秒",
        "silent": "🔇 音频（几乎）是静音，得分参考价值不大。",
        "error": "❌ {message}",
        "no_audio": "请先上传或录制音频。",
        "still_recording": "还在录音：请先点击停止，再点击分类。",
        "no_labels": "请至少输入两个标签，用逗号分隔（或点击一个预设）。",
        "no_recording": "请先上传录音。",
        "upload_again": "请重新上传文件。",
        "server_error": "服务器出错了，请重试。",
        "busy": "服务器正忙，请稍后重试。",
        "col_label": "标签",
        "col_score": "得分",
        "col_similarity": "相似度",
        "col_start": "开始（秒）",
        "col_end": "结束（秒）",
        "col_peak": "最高得分",
        "col_mean": "平均得分",
        "col_time": "时间",
        "axis_time": "时间（秒）",
        "axis_score": "得分",
        "axis_label": "标签",
        "events_summary": "{duration} 秒内 {count} 个事件",
        "listening": "正在收听… 已听 {seconds} 秒，最近一次打分在 {time}",
    },
}


def language_of(accept_language: str | None) -> str:
    """ "zh" when the browser prefers Chinese, else "en" (the page's two languages)."""
    first = (accept_language or "").split(",")[0].strip().lower()
    return "zh" if first.startswith("zh") else "en"


def message(language: str, key: str, **values: object) -> str:
    return MESSAGES[language][key].format(**values)
