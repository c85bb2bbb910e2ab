"""The demo page at /demo, in a real browser: Debian's chromium driven by playwright (no browser
download), against a live server. The microphone is Chromium's fake device, fed a test recording."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from anymodal.service.app import create_app
from anymodal.service.settings import Settings
from fastapi.testclient import TestClient

from tests.conftest import CHROMIUM, ROOT
from tests.live import FIXTURES, LiveServer

# The README's screenshot; a run rewrites it only when asked (ANYMODAL_UPDATE_SCREENSHOT=1).
SCREENSHOT = ROOT / "docs" / "demo.png"


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    args = [
        "--no-sandbox",
        "--disable-gpu",
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={FIXTURES / 'digit_7.wav'}",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
    ]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=args)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def server() -> Iterator[LiveServer]:
    with LiveServer() as live:
        yield live


def open_demo(browser, url: str):
    page = browser.new_page(viewport={"width": 760, "height": 900})
    page.set_default_timeout(15_000)
    page.goto(f"{url}/demo")
    return page


def draw_seven(page) -> None:
    box = page.locator("#image-canvas").bounding_box()
    x, y, w, h = box["x"], box["y"], box["width"], box["height"]
    page.mouse.move(x + 0.25 * w, y + 0.2 * h)
    page.mouse.down()
    page.mouse.move(x + 0.75 * w, y + 0.2 * h, steps=8)  # the bar
    page.mouse.move(x + 0.45 * w, y + 0.85 * h, steps=10)  # the stem
    page.mouse.up()


def states(page) -> dict[str, str]:
    return {
        name: page.locator(f"#bar-{name}").get_attribute("data-state") for name in ("image", "audio", "text")
    }


@pytest.mark.chromium
def test_draw_and_type(browser, server: LiveServer) -> None:
    page = open_demo(browser, server.url)
    page.get_by_label("text text").wait_for()
    draw_seven(page)
    page.get_by_label("text text").fill("sieben")
    assert page.locator("#use-image").is_checked() and page.locator("#use-text").is_checked()
    assert not page.locator("#use-audio").is_checked()
    page.get_by_role("button", name="Predict").click()
    page.locator("#result").wait_for()
    assert page.locator("#label").inner_text() in [str(d) for d in range(10)]
    assert 0 < float(page.locator("#score").inner_text()) <= 1
    found = states(page)
    assert found["image"] == found["text"] == "present"
    assert found["audio"] == "missing"
    # missing modalities are greyed out
    grey = page.locator("#bar-audio").evaluate("e => getComputedStyle(e).color")
    ink = page.locator("#bar-text").evaluate("e => getComputedStyle(e).color")
    assert grey != ink
    assert "missing" in page.locator("#bar-audio-detail").inner_text()
    shot = page.screenshot(full_page=True)
    assert shot.startswith(b"\x89PNG") and len(shot) > 10_000
    if os.environ.get("ANYMODAL_UPDATE_SCREENSHOT") == "1":
        SCREENSHOT.parent.mkdir(exist_ok=True)
        SCREENSHOT.write_bytes(shot)
    page.close()


@pytest.mark.chromium
def test_record_from_the_microphone(browser, server: LiveServer) -> None:
    page = open_demo(browser, server.url)
    page.locator("#audio-record").click()
    page.wait_for_timeout(1500)
    page.locator("#audio-stop").click()
    page.get_by_text("recorded").wait_for()
    assert page.locator("#use-audio").is_checked()
    assert not page.locator("#use-image").is_checked() and not page.locator("#use-text").is_checked()
    page.get_by_role("button", name="Predict").click()
    page.locator("#result").wait_for()
    assert page.locator("#label").inner_text()
    # The page's WAV decoded and was fused (weight 1). Chromium's fake microphone loops the 0.35 s
    # recording, so 1.5 s hold four "seven"s in a row, which the reliability gate may call unreliable.
    found = states(page)
    assert found["audio"] in ("present", "unreliable"), found
    assert page.locator("#bar-audio .track").get_attribute("aria-valuenow") == "1.000"
    assert found["image"] == found["text"] == "missing"
    page.close()


@pytest.mark.chromium
def test_api_key(browser) -> None:
    with LiveServer(api_keys="k") as live:
        page = open_demo(browser, live.url)
        page.get_by_text("401").wait_for()  # the models need a key
        page.get_by_label("API key").fill("k")
        page.get_by_role("button", name="Load models").click()
        page.get_by_label("text text").fill("sieben")
        page.get_by_role("button", name="Predict").click()
        page.locator("#result").wait_for()
        assert page.locator("#label").inner_text() == "7"
        page.get_by_label("API key").fill("wrong")
        page.get_by_role("button", name="Predict").click()
        page.locator("#error").wait_for()
        assert "401: the API key is not valid" in page.locator("#error").inner_text()
        assert page.locator("#result").is_hidden()
        page.close()


def test_demo_can_be_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    for value, status in (("true", 200), ("false", 404)):
        monkeypatch.setenv("ANYMODAL_DEMO", value)
        with TestClient(create_app(Settings(grpc_port=0, repository_poll_seconds=0))) as client:
            assert client.get("/demo").status_code == status
            assert client.get("/demo/demo.js").status_code == status
