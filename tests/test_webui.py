"""The web page in a real browser: Playwright drives Debian's Chromium against a running server,
with a fake microphone that plays a real recording."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import soundfile
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import BrowserContext, Page, expect, sync_playwright

from soundsift.core.audio import load_audio
from tests.server_process import running_server

pytestmark = [pytest.mark.slow, pytest.mark.browser]  # a real server and Chromium

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
LATIN_LETTERS = re.compile(r"[A-Za-z]")
# Every expect() polls the page until its condition holds; this default (5 s in Playwright) is only a
# hang guard, so a loaded machine makes a test slower, never failed. Explicit timeouts below are too.
expect.set_options(timeout=60_000)


@pytest.fixture(scope="module")
def server(tiny_model_dir, tmp_path_factory):
    with running_server(tiny_model_dir, tmp_path_factory.mktemp("ui") / "server.log") as process:
        yield process


@pytest.fixture(scope="module")
def microphone_recording(esc50_clips, tmp_path_factory) -> Path:
    """What the fake microphone plays: a real dog-bark clip, as 16-bit WAV (Chromium's format)."""
    samples = load_audio(esc50_clips[0], 48_000).samples
    path = tmp_path_factory.mktemp("microphone") / "dog.wav"
    soundfile.write(path, np.tile(samples, 3), 48_000, subtype="PCM_16")
    return path


@pytest.fixture(scope="module")
def playwright():
    with sync_playwright() as running:
        yield running


@pytest.fixture(scope="module")
def browser(playwright, microphone_recording):
    fake_microphone = [
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={microphone_recording}",
    ]
    launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS + fake_microphone)
    yield launched
    launched.close()


@pytest.fixture(scope="module")
def long_recording(esc50_clips, tmp_path_factory) -> Path:
    """15 s: silence, a clip, silence, a clip."""
    clips = [load_audio(path, 16_000).samples for path in esc50_clips[:2]]
    gap = np.zeros(16_000 * 2, dtype=np.float32)
    path = tmp_path_factory.mktemp("long") / "long.wav"
    soundfile.write(path, np.concatenate([gap, clips[0], gap, clips[1]]), 16_000)
    return path


OPEN_CONTEXTS: list[BrowserContext] = []


@pytest.fixture(autouse=True)
def pages_are_closed_after_each_test():
    """A test's pages are closed when it ends, passed or failed. An open page holds connections to
    the server (Gradio's event stream), which a server's SIGTERM shutdown waits for until its grace
    period (30 s) runs out: every server stop in this module took that long."""
    yield
    close_pages()


def close_pages() -> None:
    while OPEN_CONTEXTS:
        OPEN_CONTEXTS.pop().close()


def new_context(browser, *, locale: str = "en-US", width: int = 1280, height: int = 900) -> BrowserContext:
    context = browser.new_context(locale=locale, viewport={"width": width, "height": height})
    OPEN_CONTEXTS.append(context)
    return context


def open_page(browser, server, *, locale: str = "en-US", width: int = 1280, height: int = 900) -> Page:
    page = new_context(browser, locale=locale, width=width, height=height).new_page()
    page.goto(server.url + "/", wait_until="domcontentloaded")
    expect(page.locator("#classify-button")).to_be_visible(timeout=30_000)
    return page


def upload(page: Page, selector: str, path: Path) -> None:
    page.locator(f"{selector} input[type=file]").set_input_files(str(path))
    expect(page.locator(f"{selector} audio, {selector} .waveform-container, {selector} wave").first).to_be_attached(
        timeout=20_000
    )


def classify(page: Page, labels: str | None) -> None:
    if labels is not None:
        page.locator("#labels-input textarea").fill(labels)
    page.locator("#classify-button").click()


def wait_until_outputs_are_opaque(page: Page) -> None:
    """Gradio dims a pending output to 20 % opacity and fades it back in over 0.15 s once the answer has
    come; a contrast scan in between reads faded text as a violation (it did, on a slower CI machine)."""
    page.wait_for_function(
        """() => [...document.querySelectorAll('#verdict *, #results-table *')]
            .filter(element => [...element.childNodes].some(node => node.nodeType === 3 && node.textContent.trim()))
            .filter(element => !element.closest('.hide'))
            .every(element => {
                for (let shown = element; shown; shown = shown.parentElement) {
                    if (getComputedStyle(shown).opacity !== '1') return false;
                }
                return true;
            })"""
    )


def no_horizontal_scrolling(page: Page) -> bool:
    return bool(page.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth"))


def save(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    if page.locator("#score-chart").is_visible():
        expect(page.locator("#score-chart .vega-embed text").first).to_be_attached(timeout=10_000)
    page.screenshot(path=str(ARTIFACTS / f"webui-{name}.png"), full_page=True)


def test_upload_classify_and_see_results_with_consistent_decimals(browser, server, esc50_clips):
    page = open_page(browser, server)
    upload(page, "#audio-input", esc50_clips[0])
    classify(page, "dog barking, rain, siren")
    table = page.locator("#results-table")
    for label in ("dog barking", "rain", "siren"):
        expect(table).to_contain_text(label, timeout=30_000)
    expect(page.locator("#verdict")).to_contain_text(re.compile(r"(dog barking|rain|siren).*5\.0 s"))
    numbers = re.findall(r"\d+\.\d+", table.inner_text())
    assert numbers and all(len(number.split(".")[1]) == 3 for number in numbers), numbers
    # Off Hugging Face Spaces there is nothing to share to.
    assert page.locator("#audio-input [aria-label*='hare' i]").count() == 0
    save(page, "classify")


def test_the_options_reach_the_decision(browser, server, esc50_clips):
    page = open_page(browser, server)
    upload(page, "#audio-input", esc50_clips[0])
    page.get_by_text("Options", exact=True).click()
    page.locator("#threshold input[type=number]").fill("0")
    page.locator("#min-margin input[type=number]").fill("0")
    classify(page, "dog barking, rain, siren")
    expect(page.locator("#verdict")).to_contain_text(re.compile(r"^(?!.*Uncertain).*(dog barking|rain|siren)"))
    page.locator("#min-margin input[type=number]").fill("1")  # no label leads the next by the whole scale
    page.locator("#classify-button").click()
    expect(page.locator("#verdict")).to_contain_text("Uncertain", timeout=30_000)


def test_a_server_with_two_models_offers_each_and_their_ensemble(
    browser, server, tiny_model_dir, tiny_unfused_model_dir, esc50_clips, tmp_path
):
    from soundsift import Classifier

    labels = "dog barking, rain, siren"
    page = open_page(browser, server)
    expect(page.locator("#model-choice")).to_be_hidden()  # one model served: nothing to choose
    close_pages()
    names = [tiny_model_dir.name, tiny_unfused_model_dir.name]
    second = Classifier(model=str(tiny_unfused_model_dir), device="cpu").classify(esc50_clips[0], labels)
    with running_server(
        tiny_model_dir, tmp_path / "server.log", models=f"{tiny_model_dir},{tiny_unfused_model_dir}"
    ) as two:
        page = open_page(browser, two)
        upload(page, "#audio-input", esc50_clips[0])
        page.locator("#model-choice input").click()
        page.get_by_role("option", name=names[1], exact=True).click()
        classify(page, labels)
        expect(page.locator("#verdict")).to_contain_text(second.top_label, timeout=30_000)
        expect(page.locator("#verdict")).not_to_contain_text("Each model")
        page.locator("#model-choice input").click()
        page.get_by_role("option", name="+".join(names)).click()
        page.locator("#classify-button").click()
        verdict = page.locator("#verdict")
        expect(verdict).to_contain_text("Each model", timeout=30_000)
        expect(verdict).to_contain_text(f"{names[0]} →")
        expect(verdict).to_contain_text(f"{names[1]} → {second.top_label}")
        expect(verdict).to_contain_text("agreement")
        assert str(tiny_model_dir.parent) not in verdict.inner_text()
        save(page, "ensemble")
        close_pages()


def test_record_with_the_microphone_then_classify(browser, server):
    page = open_page(browser, server)
    page.locator('#audio-input button[aria-label="Record audio"]').click()
    page.locator("#audio-input .record-button").click()
    # Two seconds of recording, as the recorder itself counts them (not two seconds of this machine's time).
    expect(page.locator("#audio-input time.duration")).to_have_text(re.compile(r"^(0:0[2-9]|0:[1-5]\d|\d+:\d\d)$"))
    classify(page, "dog barking, rain")
    expect(page.locator("#verdict")).to_contain_text("still running", timeout=20_000)
    page.locator("#audio-input .stop-button").first.click()
    expect(page.locator("#audio-input .record-button, #audio-input audio").first).to_be_attached(timeout=20_000)
    # The recording is uploaded when it stops: the player's download link then names the server's copy.
    expect(page.locator("#audio-input [data-testid=download-link]")).to_have_attribute(
        "href", re.compile(r"/gradio_api/file=")
    )
    classify(page, None)
    expect(page.locator("#verdict")).to_contain_text(re.compile(r"(dog barking|rain).*\d\.\d s"), timeout=30_000)
    expect(page.locator("#results-table")).to_contain_text("dog barking")


def test_a_preset_then_classify_at_once_on_a_fresh_server(browser, tiny_model_dir, esc50_clips, tmp_path):
    with running_server(tiny_model_dir, tmp_path / "server.log") as fresh:
        try:
            page = open_page(browser, fresh)
            upload(page, "#audio-input", esc50_clips[0])
            page.locator("#preset-street").click()
            page.locator("#classify-button").click()  # no wait: the preset fills in the browser
            expect(page.locator("#results-table")).to_contain_text("car horn", timeout=30_000)
            assert page.locator("#labels-input textarea").input_value().startswith("car horn")
        finally:
            close_pages()  # before the server stops (see pages_are_closed_after_each_test)


def test_an_error_replaces_the_previous_result_and_logs_one_line(browser, server, esc50_clips):
    page = open_page(browser, server)
    upload(page, "#audio-input", esc50_clips[0])
    classify(page, "dog barking, rain")
    expect(page.locator("#results-table")).to_contain_text("dog barking", timeout=30_000)
    classify(page, "only one label")
    verdict = page.locator("#verdict")
    expect(verdict).to_contain_text(re.compile("at least 2 labels", re.IGNORECASE), timeout=30_000)
    expect(page.locator("#results-table")).not_to_contain_text("dog barking")
    assert page.locator("#results-table tbody tr td:not(:empty)").count() == 0
    assert "Traceback" not in server.log()
    assert "classification refused (invalid_labels)" in server.log()


def test_the_chinese_page_shows_no_english_in_results(browser, server, esc50_clips, long_recording):
    page = open_page(browser, server, locale="zh-CN")
    upload(page, "#audio-input", esc50_clips[0])
    page.locator("#preset-smart_home").click()
    assert page.locator("#labels-input textarea").input_value().startswith("玻璃破碎声")
    classify(page, None)
    expect(page.locator("#results-table")).to_contain_text("玻璃破碎声", timeout=30_000)
    chart = page.locator(".vega-embed").first
    for text in (
        page.locator("#verdict").inner_text(),
        page.locator("#results-table").inner_text(),
        " ".join(chart.locator("text").all_text_contents()),
    ):
        assert not LATIN_LETTERS.search(text), text
    save(page, "chinese")
    page.get_by_role("tab", name="长录音").click()
    upload(page, "#long-audio", long_recording)
    page.locator("#long-labels textarea").fill("狗叫声, 雨声")
    page.locator("#detect-button").click()
    expect(page.locator("#detect-summary")).to_contain_text("个事件", timeout=60_000)
    timeline = page.locator("#timeline .vega-embed text")
    expect(timeline.first).to_be_attached(timeout=10_000)
    for text in (
        page.locator("#detect-summary").inner_text(),
        page.locator("#events-table").inner_text(),
        " ".join(timeline.all_text_contents()),
    ):
        assert not LATIN_LETTERS.search(text), text
    for tab in ("声音分类", "长录音", "实时收听"):
        assert page.get_by_role("tab", name=tab).count() == 1


@pytest.mark.parametrize(("width", "height"), [(1280, 900), (390, 844)])
def test_no_horizontal_scrolling_on_a_desktop_or_a_phone(browser, server, esc50_clips, long_recording, width, height):
    page = open_page(browser, server, width=width, height=height)
    upload(page, "#audio-input", esc50_clips[0])
    classify(page, "dog barking, rain, siren, glass breaking, a very long label about a washing machine")
    expect(page.locator("#results-table")).to_contain_text("washing machine", timeout=30_000)
    assert no_horizontal_scrolling(page)
    for tab in ("Classify", "Long audio", "Live"):  # no tab hidden in an overflow menu
        expect(page.get_by_role("tab", name=tab)).to_be_visible()
    save(page, f"classify-{width}")
    page.get_by_role("tab", name="Long audio").click()
    upload(page, "#long-audio", long_recording)
    page.locator("#long-labels textarea").fill("dog barking, rain")
    page.locator("#detect-button").click()
    expect(page.locator("#detect-summary")).to_contain_text("events", timeout=60_000)
    assert no_horizontal_scrolling(page)
    page.get_by_role("tab", name="Live").click()
    assert no_horizontal_scrolling(page)


def test_listen_live_shows_rolling_scores_from_the_microphone(browser, server):
    page = open_page(browser, server)
    page.get_by_role("tab", name="Live").click()
    page.locator("#live-labels textarea").fill("dog barking, rain, siren")
    page.locator("#live-audio .record-button").click()
    status = page.locator("#live-status")
    expect(status).to_contain_text("Listening", timeout=30_000)
    first = status.inner_text()
    expect(page.locator("#live-scores")).to_contain_text("dog barking")
    expect(status).not_to_have_text(first, timeout=15_000)  # it keeps rolling
    expect(status).to_contain_text(re.compile(r"\b([3-9]|\d{2,}) s heard"), timeout=20_000)
    page.locator("#live-audio .stop-button").first.click()


def test_the_page_passes_an_accessibility_scan_and_keyboard_focus_is_visible(browser, server, esc50_clips):
    for locale in ("en-US", "zh-CN"):
        page = open_page(browser, server, locale=locale)
        upload(page, "#audio-input", esc50_clips[0])
        classify(page, "dog barking, rain")
        expect(page.locator("#results-table")).to_contain_text("dog barking", timeout=30_000)
        wait_until_outputs_are_opaque(page)
        violations = Axe().run(page).response["violations"]
        assert not violations, [(v["id"], [n["target"] for n in v["nodes"]]) for v in violations]
        page.locator("#labels-input textarea").focus()
        page.keyboard.press("Tab")
        outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
        assert outline not in ("", "none"), outline
        unnamed = page.evaluate(
            "[...document.querySelectorAll('button')].filter(b => b.offsetParent !== null && "
            "!(b.innerText.trim() || b.getAttribute('aria-label') || b.title)).length"
        )
        assert unnamed == 0
    page.locator("#classify-button").press("Enter")  # keyboard alone runs a classification
    expect(page.locator("#verdict")).to_contain_text("置信度", timeout=30_000)


def test_a_blocked_microphone_tells_the_user_what_to_do(playwright, server):
    blocked = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
    try:
        page = open_page(blocked, server)
        page.locator('#audio-input button[aria-label="Record audio"]').click()
        expect(page.locator("#audio-input")).to_contain_text("allow this page to use the microphone")
    finally:
        blocked.close()


def test_teach_sounds_on_the_page_then_classify_with_them(browser, server, tmp_path):
    from tests.test_adapters import RATE, synthetic

    clips = {
        kind: [write_clip(tmp_path / f"{kind}-{variant}.wav", synthetic(kind, variant), RATE) for variant in range(3)]
        for kind in ("hum", "clicks")
    }
    page = open_page(browser, server)
    page.get_by_role("tab", name="Teach").click()
    page.locator("#teach-name textarea").fill("workshop")
    for kind, paths in clips.items():
        page.locator("#teach-label textarea").fill(kind)
        page.locator("#teach-files input[type=file]").set_input_files([str(path) for path in paths])
        expect(page.locator("#teach-files")).to_contain_text(paths[-1].stem, timeout=20_000)
        page.locator("#teach-add").click()
        expect(page.locator("#teach-table")).to_contain_text(kind, timeout=20_000)
    assert page.get_by_role("button", name="common.upload").count() == 0  # every button has a real name
    page.locator("#teach-button").click()
    expect(page.locator("#teach-status")).to_contain_text("Taught workshop", timeout=60_000)

    page.get_by_role("tab", name="Classify").click()
    upload(page, "#audio-input", write_clip(tmp_path / "new.wav", synthetic("clicks", 5), RATE))
    page.locator("#labels-input textarea").fill("")
    page.locator("#adapter-choice input").click()
    page.get_by_role("option", name="workshop").click()
    page.locator("#classify-button").click()
    expect(page.locator("#results-table")).to_contain_text("hum", timeout=30_000)
    expect(page.locator("#verdict")).to_contain_text("clicks")
    save(page, "taught")

    page.get_by_role("tab", name="Live").click()  # listening with the taught sounds alone
    page.locator("#live-adapter input").click()
    page.get_by_role("option", name="workshop").click()
    page.locator("#live-audio .record-button").click()
    expect(page.locator("#live-scores")).to_contain_text("clicks", timeout=30_000)
    expect(page.locator("#live-scores")).to_contain_text("hum")
    page.locator("#live-audio .stop-button").first.click()


def write_clip(path: Path, samples: np.ndarray, rate: int) -> Path:
    soundfile.write(path, samples, rate)
    return path


ATTACKER_PAGE = """<!doctype html><html><body><script>
// A page on another port of the same host: same site, so SameSite=Strict still sends the cookie.
function wav() {
  const rate = 16000, n = rate, view = new DataView(new ArrayBuffer(44 + 2 * n));
  const text = (at, s) => [...s].forEach((c, i) => view.setUint8(at + i, c.charCodeAt(0)));
  text(0, "RIFF"); view.setUint32(4, 36 + 2 * n, true); text(8, "WAVEfmt ");
  view.setUint32(16, 16, true); view.setUint16(20, 1, true); view.setUint16(22, 1, true);
  view.setUint32(24, rate, true); view.setUint32(28, 2 * rate, true); view.setUint16(32, 2, true);
  view.setUint16(34, 16, true); text(36, "data"); view.setUint32(40, 2 * n, true);
  for (let i = 0; i < n; i++) view.setInt16(44 + 2 * i, 8000 * Math.sin(i / 7), true);
  return new Blob([view.buffer], {type: "audio/wav"});
}
const form = new FormData();
form.append("audio", wav(), "a.wav");
form.append("labels", "tone, noise");
fetch("TARGET/api/classify", {method: "POST", body: form, mode: "no-cors", credentials: "include"})
  .finally(() => { document.title = "sent"; document.getElementById("logout").submit(); });
</script><form id="logout" method="post" action="TARGET/logout"></form></body></html>"""


@pytest.fixture
def attacker_site(tmp_path):
    """A hostile page served on another loopback port of the same host."""
    import functools
    import http.server
    import threading

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    site = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=site.serve_forever, daemon=True)
    thread.start()
    yield site, tmp_path
    site.shutdown()
    site.server_close()


def classify_answers(server, status: str) -> float:
    """How many /api/classify requests the server answered with ``status`` (its own metrics)."""
    import requests

    pattern = re.compile(rf'soundsift_requests_total{{endpoint="/api/classify",status="{status}"}} (\S+)')
    match = pattern.search(requests.get(f"{server.url}/metrics", timeout=10).text)
    return float(match.group(1)) if match else 0.0


def test_with_a_key_the_page_logs_in_classifies_and_a_hostile_page_next_door_gets_nothing(
    browser, tiny_model_dir, esc50_clips, attacker_site, tmp_path
):
    site, folder = attacker_site
    with running_server(tiny_model_dir, tmp_path / "server.log", api_key="browser-test-key") as keyed:
        try:
            context = new_context(browser)
            page = context.new_page()
            page.goto(keyed.url + "/", wait_until="domcontentloaded")
            expect(page).to_have_url(re.compile(r"/login$"))
            page.locator("#key").fill("browser-test-key")
            page.locator("button[type=submit]").click()
            expect(page.locator("#classify-button")).to_be_visible(timeout=30_000)
            upload(page, "#audio-input", esc50_clips[0])  # Gradio's upload and queue POSTs carry the origin
            classify(page, "dog barking, rain")
            expect(page.locator("#results-table")).to_contain_text("dog barking", timeout=30_000)

            (folder / "index.html").write_text(ATTACKER_PAGE.replace("TARGET", keyed.url))
            before = classify_answers(keyed, "200")
            hostile = context.new_page()
            hostile.goto(f"http://127.0.0.1:{site.server_address[1]}/index.html")
            expect(hostile.locator("body")).to_contain_text("cross_origin", timeout=20_000)  # the logout form's answer
            assert classify_answers(keyed, "200") == before, "the hostile page ran the model with the user's cookie"
            page.reload(wait_until="domcontentloaded")
            expect(page.locator("#classify-button")).to_be_visible(timeout=30_000)  # still logged in
        finally:
            close_pages()  # before the server stops (see pages_are_closed_after_each_test)
