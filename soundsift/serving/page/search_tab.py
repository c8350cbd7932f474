"""The "Search" tab (only when the server has a search index): a description or an example sound
in, hits out, each with a player that starts at the hit and a waveform of the hit's span.

The players load the indexed file from GET /api/search/files/{id} (by id, behind the same key or
login cookie as the page) with a media fragment (``#t=start,end``), so the browser itself seeks
to the hit and stops at its end. Waveforms are drawn here as inline SVG from the decoded span.
"""

from __future__ import annotations

import html
from pathlib import Path

import gradio as gr
import numpy as np

from soundsift.core.audio import AudioLimits, stream_audio
from soundsift.i18n.page_text import message
from soundsift.search import SearchHit, SearchResult
from soundsift.serving.page.common import PageProblem, as_page_problems, open_upload, request_language, score_text
from soundsift.serving.search_service import SearchService
from soundsift.serving.service import ClassificationService

WAVEFORM_RATE = 8000
WAVEFORM_BARS = 120
MAX_PAGE_HITS = 20


def build(service: ClassificationService, search_service: SearchService, i18n: gr.I18n, upload_root: Path) -> None:
    async def search(query: str, example: str | None, top: float, request: gr.Request) -> str:
        language = request_language(request)
        try:
            return await run_search(service, search_service, upload_root, language, query, example, int(top))
        except PageProblem as problem:
            return f'<p class="search-error">{html.escape(message(language, "error", message=str(problem)))}</p>'

    with gr.Row(equal_height=False):
        with gr.Column(scale=1, min_width=300):
            gr.Markdown(i18n("search_heading"), elem_classes="heading")
            query = gr.Textbox(
                label=i18n("search_query"), placeholder=i18n("search_query_hint"), elem_id="search-query"
            )
            example = gr.Audio(
                sources=["upload"], type="filepath", label=i18n("search_example"), elem_id="search-example"
            )
            top = gr.Slider(1, MAX_PAGE_HITS, value=10, step=1, label=i18n("search_top"))
            button = gr.Button(i18n("search_button"), variant="primary", elem_id="search-button")
        with gr.Column(scale=2, min_width=300):
            results = gr.HTML(elem_id="search-results", label=i18n("search_results"))
    for trigger in (button.click, query.submit):
        trigger(search, inputs=[query, example, top], outputs=[results], api_visibility="private")


async def run_search(
    service: ClassificationService,
    search_service: SearchService,
    upload_root: Path,
    language: str,
    query: str | None,
    example: str | None,
    top: int,
) -> str:
    text = (query or "").strip()
    if bool(text) == bool(example):
        raise PageProblem(message(language, "no_search"))
    top = max(1, min(MAX_PAGE_HITS, top))
    with as_page_problems("search", language):
        if example:
            with open_upload(upload_root, example, language) as upload:
                result = await search_service.search(None, like=upload.file, like_name=upload.name, top=top)
        else:
            result = await search_service.search(text, top=top)
        waveforms = await service.in_worker_pool(_waveforms, result.hits)
    return render(result, waveforms, language)


def render(result: SearchResult, waveforms: list[str], language: str) -> str:
    how = message(language, "search_exact" if result.exact else "search_approximate")
    summary = message(language, "search_summary", count=len(result.hits), windows=result.windows_searched, how=how)
    asked = html.escape(result.query or result.example or "", quote=True)
    parts = [f'<p class="search-summary">{html.escape(summary)}</p>', f'<ol class="search-hits" data-query="{asked}">']
    for hit, waveform in zip(result.hits, waveforms, strict=True):
        name = html.escape(Path(hit.path).name)
        span = f"{_clock(hit.start_s)}–{_clock(hit.end_s)}"
        play = html.escape(message(language, "search_play", start=_clock(hit.start_s)))
        parts.append(
            f'<li class="search-hit" data-file-id="{hit.file_id}" '
            f'data-start="{hit.start_s:g}" data-end="{hit.end_s:g}">'
            f'<div><strong title="{html.escape(hit.path)}">{name}</strong> · {span} · {score_text(hit.score)}</div>'
            f"{waveform}"
            f'<audio controls preload="none" aria-label="{play}" '
            f'src="/api/search/files/{hit.file_id}#t={hit.start_s:g},{hit.end_s:g}"></audio></li>'
        )
    parts.append("</ol>")
    return "".join(parts)


def _waveforms(hits: list[SearchHit]) -> list[str]:
    return [_waveform(hit) for hit in hits]


def _waveform(hit: SearchHit) -> str:
    """The hit's span as an SVG of peak bars; empty if the file cannot be read any more."""
    try:
        samples = _span(hit.path, hit.start_s, hit.end_s)
    except Exception:  # a file moved since indexing: the hit is still shown, without its picture
        return ""
    if not len(samples):
        return ""
    bars = np.array_split(np.abs(samples), min(WAVEFORM_BARS, len(samples)))
    peaks = np.array([bar.max() for bar in bars])
    peaks = peaks / (peaks.max() or 1.0)
    width = 2 * len(peaks)
    rects = "".join(
        f'<rect x="{2 * i}" y="{20 - 19 * p:.1f}" width="1.4" height="{max(0.5, 38 * p):.1f}"/>'
        for i, p in enumerate(peaks)
    )
    return (
        f'<svg class="search-waveform" viewBox="0 0 {width} 40" preserveAspectRatio="none" role="img" '
        f'aria-hidden="true" width="100%" height="40" fill="#c2410c">{rects}</svg>'
    )


def _span(path: str, start_s: float, end_s: float) -> np.ndarray:
    """Samples of [start_s, end_s) of a file, decoded as a stream and stopped at the end."""
    stream = stream_audio(path, WAVEFORM_RATE, limits=AudioLimits(max_channels=64))
    first, last = int(start_s * WAVEFORM_RATE), int(end_s * WAVEFORM_RATE)
    kept, position = [], 0
    for block in stream.blocks:
        if position + len(block) > first:
            kept.append(block[max(0, first - position) : max(0, last - position)])
        position += len(block)
        if position >= last:
            break
    return np.concatenate(kept) if kept else np.zeros(0, dtype=np.float32)


def _clock(seconds: float) -> str:
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}:{rest:04.1f}"
