"""The "Teach" tab: name labels, upload or record a few clips of each, teach; the taught sounds
then appear under "Taught sounds" on the Classify tab (an adapter stored by the server)."""

from __future__ import annotations

import contextlib
from collections import Counter
from pathlib import Path

import gradio as gr
import pandas as pd

from soundsift.i18n.page_text import message
from soundsift.serving.page.common import PageProblem, adapter_choices, as_page_problems, open_upload, request_language
from soundsift.serving.service import ClassificationService

Examples = list[tuple[str, str]]
"""(label, uploaded file path) pairs, in the order added."""


def build(service: ClassificationService, i18n: gr.I18n, upload_root: Path, choices: list[gr.Dropdown]) -> None:
    """The tab; after teaching, every "Taught sounds" choice in ``choices`` offers the new adapter."""
    limit = service.settings.max_teach_clips

    def add(
        examples: Examples | None, label: str, files: list[str] | None, recorded: str | None, request: gr.Request
    ) -> tuple[Examples, str, pd.DataFrame, None, None]:
        language = request_language(request)
        examples = list(examples or [])
        clips = [*(files or []), *([recorded] if recorded else [])]
        if not label or not label.strip():
            status = message(language, "teach_need_label")
        elif not clips:
            status = message(language, "teach_need_clips")
        elif len(examples) + len(clips) > limit:
            status = message(language, "teach_too_many", limit=limit)
        else:
            examples += [(label.strip(), clip) for clip in clips]
            counts = Counter(name for name, _ in examples)
            status = message(language, "teach_added", count=len(examples), labels=len(counts))
        return examples, status, counts_table(examples, language), None, None

    async def teach(name: str, examples: Examples | None, request: gr.Request) -> tuple[str | gr.Dropdown, ...]:
        language = request_language(request)
        try:
            status = await run_teaching(service, upload_root, language, name, examples or [])
        except PageProblem as problem:
            status = message(language, "error", message=str(problem))
        return status, *adapter_dropdowns(service, len(choices))

    gr.Markdown(i18n("teach_intro"))
    examples = gr.State([])
    with gr.Row(equal_height=False):
        with gr.Column(min_width=300):
            name = gr.Textbox(label=i18n("teach_name"), value="my-sounds", elem_id="teach-name")
            label = gr.Textbox(label=i18n("teach_label"), elem_id="teach-label")
            files = gr.File(
                label=i18n("teach_files"), file_count="multiple", file_types=["audio"], elem_id="teach-files"
            )
            recorded = gr.Audio(
                label=i18n("teach_record"), sources=["microphone"], type="filepath", elem_id="teach-record"
            )
            add_button = gr.Button(i18n("teach_add"), elem_id="teach-add")
        with gr.Column(min_width=300):
            table = gr.Dataframe(label=i18n("teach_table"), interactive=False, elem_id="teach-table")
            status = gr.Markdown(elem_id="teach-status")
            teach_button = gr.Button(i18n("teach_save"), variant="primary", elem_id="teach-button")
    add_button.click(
        add,
        inputs=[examples, label, files, recorded],
        outputs=[examples, status, table, files, recorded],
        api_visibility="private",
    )
    teach_button.click(teach, inputs=[name, examples], outputs=[status, *choices], api_visibility="private")


async def run_teaching(
    service: ClassificationService, upload_root: Path, language: str, name: str, examples: Examples
) -> str:
    if not examples:
        raise PageProblem(message(language, "teach_nothing"))
    negatives = [path for label, path in examples if label == "_none"]
    labelled = [(label, path) for label, path in examples if label != "_none"]
    with as_page_problems("teaching", language), contextlib.ExitStack() as opened:
        clips = [(opened.enter_context(open_upload(upload_root, path, language)), label) for label, path in labelled]
        others = [opened.enter_context(open_upload(upload_root, path, language)) for path in negatives]
        adapter = await service.teach(name.strip(), clips, others)
    return message(
        language, "teach_done", name=adapter.name, labels=len(adapter.labels), clips=len(adapter.support),
        method=adapter.method,
    )  # fmt: skip


def counts_table(examples: Examples, language: str) -> pd.DataFrame:
    counts = Counter(label for label, _ in examples)
    columns = [message(language, "col_label"), message(language, "col_clips")]
    return pd.DataFrame(sorted(counts.items()), columns=columns)


def adapter_dropdowns(service: ClassificationService, count: int) -> tuple[gr.Dropdown, ...]:
    """``count`` updates that offer every stored adapter (and none)."""
    return tuple(gr.Dropdown(choices=adapter_choices(service)) for _ in range(count))
