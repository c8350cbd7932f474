"""The page's Search tab in Chromium: search by words and by a dropped example; each hit has a
waveform and a player that starts at the hit's time."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile
from playwright.sync_api import expect

from soundsift import Classifier, Library
from tests.server_process import running_server
from tests.test_webui import ARTIFACTS, CHROMIUM, CHROMIUM_FLAGS

pytestmark = [pytest.mark.slow, pytest.mark.browser]
RATE = 16_000


@pytest.fixture(scope="module")
def recordings(tmp_path_factory: pytest.TempPathFactory, esc50_clips: list[Path]) -> Path:
    """Seven ESC-50 clips, and one 40 s recording made of eight (the third, a dense 5 s of sound, only
    there: the example cut from it has exactly one place to be found)."""
    folder = tmp_path_factory.mktemp("page-recordings")
    parts = []
    for index, clip in enumerate(esc50_clips):
        samples, rate = soundfile.read(clip, dtype="float32")
        assert rate == RATE
        if index != 2:
            soundfile.write(folder / f"clip{index}.wav", samples, RATE)
        parts.append(samples[: 5 * RATE])
    soundfile.write(folder / "long.wav", np.concatenate(parts), RATE)
    return folder


@pytest.fixture(scope="module")
def search_server(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory, recordings: Path):
    index = tmp_path_factory.mktemp("page-index") / "index"
    Library(index, classifier=Classifier(model=str(tiny_model_dir), device="cpu")).add([recordings])
    with running_server(tiny_model_dir, index.parent / "server.log", search_index=str(index)) as process:
        yield process


@pytest.fixture(scope="module")
def page(search_server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
        page.goto(search_server.url + "/", wait_until="domcontentloaded")
        page.get_by_role("tab", name="Search").click()
        expect(page.locator("#search-button")).to_be_visible(timeout=30_000)
        yield page
        browser.close()


def test_search_by_words_shows_hits_with_waveforms_and_players(page) -> None:
    page.locator("#search-query textarea").fill("dog barking -music")
    page.locator("#search-button").click()
    hits = page.locator("#search-results .search-hit")
    expect(hits.first).to_be_visible(timeout=30_000)
    assert 1 <= hits.count() <= 10
    expect(page.locator("#search-results .search-summary")).to_contain_text("exact search")
    assert page.locator("#search-results svg.search-waveform rect").count() > 100
    assert "#t=" in (hits.first.locator("audio").get_attribute("src") or "")


def test_an_example_finds_its_place_and_the_player_starts_there(page, recordings: Path, tmp_path: Path) -> None:
    samples, _ = soundfile.read(recordings / "long.wav", dtype="float32")
    excerpt = tmp_path / "excerpt.wav"
    soundfile.write(excerpt, samples[10 * RATE : 15 * RATE], RATE)
    page.locator("#search-query textarea").fill("")
    page.locator("#search-example input[type=file]").set_input_files(str(excerpt))
    expect(page.locator("#search-example audio, #search-example wave").first).to_be_attached(timeout=20_000)
    page.locator("#search-button").click()
    first = page.locator("#search-results ol[data-query='excerpt.wav'] .search-hit").first
    expect(first).to_contain_text("long.wav", timeout=30_000)
    start, end = float(first.get_attribute("data-start") or "nan"), float(first.get_attribute("data-end") or "nan")
    assert start <= 10 and end >= 15
    # The browser loads the indexed file from the server and seeks to the hit by itself.
    position = first.locator("audio").evaluate(
        """audio => new Promise((done, failed) => {
            audio.muted = true;
            audio.addEventListener('loadedmetadata', () => done(audio.currentTime), {once: true});
            audio.addEventListener('error', () => failed('the audio did not load'), {once: true});
            audio.preload = 'auto';
            audio.load();
        })"""
    )
    assert position == pytest.approx(start, abs=0.05)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "webui-search.png"), full_page=True)


def test_nothing_to_search_says_so(page) -> None:
    page.locator("#search-example button[aria-label*='Clear' i]").first.click()
    page.locator("#search-query textarea").fill("")
    page.locator("#search-button").click()
    expect(page.locator("#search-results")).to_contain_text("one of the two", timeout=20_000)
