"""The web page (Gradio), mounted at / in the FastAPI app; each tab is a module, all call
ClassificationService only. Every string follows the browser's language (soundsift.i18n.page_text)."""

from __future__ import annotations

from pathlib import Path

import gradio as gr
from fastapi import FastAPI

from soundsift.i18n.page_text import TEXT
from soundsift.serving.page import classify_tab, detect_tab, live_tab, search_tab, teach_tab
from soundsift.serving.search_service import SearchService
from soundsift.serving.service import ClassificationService

# Never readable through the page, whatever else is configured.
BLOCKED_PATHS = ("/proc", "/sys", "/dev", "/etc", "/root", "/var", "/boot", "/run")

# Layout that holds at 390 px and 1280 px without horizontal scrolling; visible keyboard focus.
CSS = """
.presets { flex-wrap: wrap !important; gap: 6px !important; }
.presets > button { flex: 0 1 auto !important; min-width: 0 !important; }
.hint p { font-size: var(--text-sm); color: var(--body-text-color-subdued); margin: 0; }
.heading p { margin: 0 0 -6px 2px; }
#results-table, #events-table, #live-scores, #live-events { max-width: 100%; }
*:focus-visible { outline: 3px solid #2563eb !important; outline-offset: 2px; }
/* Contrast of at least 4.5:1 (WCAG AA) where the default theme falls short. */
.hint p, .show-api, #audio-input time, #long-audio time, .playback > span { color: var(--body-text-color) !important; }
.search-hits { padding-left: 1.4em; } .search-hit { margin-bottom: 12px; } .search-hit audio { width: 100%; }
button.primary { background: #c2410c !important; border-color: #c2410c !important; color: #fff !important; }
"""


def build_ui(
    service: ClassificationService, upload_root: Path, search: SearchService | None = None
) -> tuple[gr.Blocks, gr.I18n]:
    i18n = gr.I18n(**TEXT)
    with gr.Blocks(title="soundsift") as page:
        gr.Markdown(i18n("title"))
        with gr.Tab(i18n("classify_tab"), elem_id="classify-tab"):
            adapter_choice = classify_tab.build(service, i18n, upload_root)
        with gr.Tab(i18n("long_tab"), elem_id="long-tab"):
            detect_tab.build(service, i18n, upload_root)
        with gr.Tab(i18n("live_tab"), elem_id="live-tab"):
            live_choice = live_tab.build(service, i18n)
        choices = [adapter_choice, live_choice]
        if service.settings.max_adapters:
            with gr.Tab(i18n("teach_tab"), elem_id="teach-tab"):
                teach_tab.build(service, i18n, upload_root, choices)
        if search is not None and search.library is not None:  # the server was given a search index
            with gr.Tab(i18n("search_tab"), elem_id="search-tab"):
                search_tab.build(service, search, i18n, upload_root)
        # Adapters taught elsewhere (the API, another browser) are offered as soon as the page opens.
        page.load(lambda: teach_tab.adapter_dropdowns(service, len(choices)), outputs=choices, api_visibility="private")
    return page, i18n


def mount_ui(app: FastAPI, service: ClassificationService, search: SearchService, upload_root: Path) -> None:
    page, i18n = build_ui(service, upload_root, search)
    # Gradio's queue is unbounded by default; the service admits at most max_queue requests anyway.
    page.queue(default_concurrency_limit=service.settings.max_queue, max_size=service.settings.max_queue)
    gr.mount_gradio_app(
        app,
        page,
        path="/",
        i18n=i18n,
        css=CSS,
        max_file_size=f"{service.settings.max_upload_mb:g}mb",
        show_error=False,
        footer_links=["api"],
        enable_monitoring=False,
        blocked_paths=[path for path in BLOCKED_PATHS if Path(path).exists()],
    )
    # gr.mount_gradio_app never marks the page as launched, and Gradio skips its own check that a
    # file value names an uploaded file until it is (processing_utils._check_allowed): without this,
    # any server path was accepted. The HTTP guard checks the same rule before Gradio sees a request.
    page.has_launched = True
