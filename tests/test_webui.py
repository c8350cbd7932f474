"""The web page in a real browser: Playwright drives Debian's Chromium against a running server."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import expect, sync_playwright

from tests.server_process import ServerProcess

pytestmark = [pytest.mark.slow, pytest.mark.browser]  # a real server and Chromium

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


@pytest.fixture(scope="module")
def server(tiny_model_dir, tmp_path_factory):
    process = ServerProcess(tiny_model_dir, tmp_path_factory.mktemp("ui") / "server.log")
    process.wait_ready()
    yield process
    process.terminate()


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield launched
        launched.close()


def open_page(browser, server, locale: str = "en-US"):
    context = browser.new_context(locale=locale)
    page = context.new_page()
    page.goto(server.url + "/", wait_until="domcontentloaded")
    expect(page.locator("#classify-button")).to_be_visible(timeout=30_000)
    return page


def test_upload_type_labels_classify_and_see_results(browser, server, esc50_clips):
    page = open_page(browser, server)
    page.locator("#audio-input input[type=file]").set_input_files(str(esc50_clips[0]))
    expect(
        page.locator("#audio-input audio, #audio-input .waveform-container, #audio-input wave").first
    ).to_be_attached(timeout=20_000)
    page.locator("#labels-input textarea").fill("dog barking, rain, siren")
    page.locator("#classify-button").click()
    table = page.locator("#results-table")
    for label in ("dog barking", "rain", "siren"):
        expect(table).to_contain_text(label, timeout=30_000)
    verdict = page.locator("#verdict")
    expect(verdict).to_contain_text(re.compile(r"(dog barking|rain|siren).*5\.0 s"), timeout=10_000)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "webui-classify.png"), full_page=True)


def test_preset_fills_labels_and_errors_are_friendly(browser, server):
    page = open_page(browser, server)
    page.locator("#preset-smart_home").click()
    expect(page.locator("#labels-input textarea")).to_have_value(
        "glass breaking, smoke alarm, dog barking, baby crying, door knock, doorbell, speech, silence"
    )
    page.locator("#preset-smart_home_zh").click()
    expect(page.locator("#labels-input textarea")).to_have_value(
        "玻璃破碎声, 烟雾报警声, 狗叫声, 婴儿哭声, 敲门声, 门铃声, 说话声, 安静"
    )
    page.locator("#classify-button").click()
    expect(page.get_by_text("Upload or record some audio first").first).to_be_visible(timeout=15_000)
    assert "Traceback" not in page.content()


def test_page_text_follows_chinese_browser_language(browser, server):
    page = open_page(browser, server, locale="zh-CN")
    expect(page.get_by_text("零样本声音分类").first).to_be_visible(timeout=15_000)
    expect(page.locator("#classify-button")).to_contain_text("分类")


def test_long_recording_tab_shows_timeline_and_events(browser, server, esc50_clips, tmp_path):
    import numpy as np
    import soundfile

    from soundsift.core.audio import load_audio

    samples = np.concatenate([load_audio(path, 16_000).samples for path in esc50_clips[:3]])
    recording = tmp_path / "long.wav"
    soundfile.write(recording, samples, 16_000)
    page = open_page(browser, server)
    page.get_by_role("tab", name="Long recording").click()
    page.locator("#long-audio input[type=file]").set_input_files(str(recording))
    page.locator("#long-labels textarea").fill("dog, rain, siren")
    page.locator("#detect-button").click()
    # A matplotlib figure in gr.Plot renders as an <img>; the spinner while processing is an <svg>.
    expect(page.locator("#timeline img").first).to_be_visible(timeout=60_000)
    expect(page.get_by_text("processing")).to_have_count(0, timeout=30_000)
    expect(page.locator("#events-table")).to_contain_text("start_s")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "webui-long-recording.png"), full_page=True)
