"""The main path in a real browser: `python app.py` in a subprocess, driven by Debian's chromium.
Its result, downloaded by the browser, carries Content Credentials the app shows when it is uploaded."""
from __future__ import annotations

import re
from pathlib import Path

import c2pa
import numpy as np
import pytest
from PIL import Image

from archivist.archive import Archive
from benchmarks.load_app import free_port
from stylegan.optimize import REFINE_STEPS
from tests.helpers.appprocess import running_app
from tests.helpers.required import skip_unless

CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT = ROOT / "test-artifacts" / "browser.png"
TITLE = "Letter from the harbour master, 1888"

pytestmark = [pytest.mark.browser, pytest.mark.slow,
              skip_unless(CHROMIUM.exists(), reason="needs Debian's chromium (apt-get install chromium)")]


@pytest.fixture
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        yield browser
        browser.close()


def test_stylize_in_the_browser_and_find_the_entry_after_a_restart(browser, tmp_path):
    scan = tmp_path / "harbour_letter.png"
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((60, 80, 3)) * 255).astype(np.uint8), "RGB").save(scan)
    archive_dir, log, port = tmp_path / "archive", tmp_path / "app.log", free_port()
    page = browser.new_page(viewport={"width": 1400, "height": 1600})
    outside = []
    page.on("request", lambda request: outside.append(request.url)
            if not request.url.startswith((f"http://127.0.0.1:{port}", "data:", "blob:")) else None)

    with running_app(port, archive_dir, log) as url:
        page.goto(url)
        page.locator("#content-image input[type=file]").set_input_files(str(scan))
        page.wait_for_selector("#content-image img", timeout=30_000)
        page.locator("#strength input[type=range]").fill("0.35")
        assert page.locator("#strength input[type=number]").input_value() == "0.35"
        page.get_by_label("Title").first.fill(TITLE)
        page.locator("#stylize-button").click()
        page.wait_for_selector("#comparison img", timeout=180_000)
        page.wait_for_selector("#preset-gallery img", timeout=180_000)  # thumbnails the model rendered
        status = page.locator("#stylize-status").inner_text(timeout=30_000)
        entry_id = re.search(r"entry ([0-9a-f]{16})", status).group(1)
        with page.expect_download(timeout=60_000) as download:
            page.locator("#result-file a").first.click()
        downloaded = tmp_path / "downloaded.png"
        download.value.save_as(downloaded)
        page.get_by_role("tab", name="Archive").click()
        page.locator("#archive-gallery").get_by_text(TITLE).first.wait_for(timeout=60_000)

    entry = Archive(archive_dir).get(entry_id)
    assert entry.catalogue.title == TITLE and entry.record.style_strength == 0.35
    assert entry.record.source_name == scan.name
    with c2pa.Reader(str(downloaded)) as reader:  # what the browser saved verifies
        assert reader.get_validation_state() == "Valid"
        ingredients = reader.get_active_manifest()["ingredients"]
    assert {(item["title"], item["relationship"]) for item in ingredients} >= {(scan.name, "parentOf")}

    with running_app(port, archive_dir, log) as url:  # a new process over the same archive
        page.goto(f"{url}?entry={entry_id}")  # the permalink opens the entry in the Archive tab
        header = page.locator("#entry-header")
        header.get_by_text(TITLE).wait_for(timeout=60_000)
        assert entry_id in header.inner_text()
        page.locator("#archive-gallery").get_by_text(TITLE).first.wait_for(timeout=30_000)
        page.locator("#entry-credentials").get_by_text("Content Credentials: Valid").wait_for(timeout=30_000)
        page.get_by_role("tab", name="Content Credentials").click()
        page.locator("#credentials-file input[type=file]").set_input_files(str(downloaded))
        summary = page.locator("#credentials-summary")
        summary.get_by_text("Content Credentials: Valid").wait_for(timeout=60_000)
        assert "self-issued" in summary.inner_text() and f"original: {scan.name}" in summary.inner_text()
        SCREENSHOT.parent.mkdir(exist_ok=True)
        page.screenshot(path=str(SCREENSHOT), full_page=True)
    assert outside == []  # no web fonts, analytics or CDNs: the page works offline


def test_best_quality_shows_the_network_result_then_refined_ones_and_stop_ends_it(browser, tmp_path):
    """Best quality streams: the network's result at once, then refined results with a progress bar;
    Stop cancels the work, so nothing of it is archived, and the next (fast) run is served at once."""
    scan, style = tmp_path / "survey_map.png", tmp_path / "engraving.png"
    rng = np.random.default_rng(1)
    # Large enough that a refinement step takes a while on a CPU, so Stop arrives mid-way.
    Image.fromarray((rng.random((360, 480, 3)) * 255).astype(np.uint8), "RGB").save(scan)
    stripes = (np.sin(np.arange(96) / 3)[:, None] * np.cos(np.arange(128) / 5)[None] * 127 + 128).astype(np.uint8)
    Image.fromarray(stripes, "L").convert("RGB").save(style)
    archive_dir, log, port = tmp_path / "archive", tmp_path / "app.log", free_port()
    page = browser.new_page(viewport={"width": 1400, "height": 1600})
    with running_app(port, archive_dir, log) as url:
        page.goto(url)
        page.locator("#content-image input[type=file]").set_input_files(str(scan))
        page.wait_for_selector("#content-image img", timeout=30_000)
        page.get_by_text("My style images (blended by weight)").click()
        page.locator("#style-image-1 input[type=file]").set_input_files(str(style))
        page.wait_for_selector("#style-image-1 img", timeout=30_000)
        page.locator("#style-source input[value=images]:checked").wait_for(timeout=30_000)
        page.locator("#quality input[value=best]").check()
        page.locator("#stylize-button").click()
        status = page.locator("#stylize-status")
        status.get_by_text("showing the network's result").wait_for(timeout=180_000)
        first = page.locator("#comparison img").last.get_attribute("src")
        # The progress bar counts the refinement's steps.
        page.locator(f"[role=progressbar][aria-label*='/{REFINE_STEPS}, loss']").first.wait_for(timeout=180_000)
        status.get_by_text("refined result 1").wait_for(timeout=180_000)
        assert page.locator("#comparison img").last.get_attribute("src") != first  # replaced by the refined one
        # Gradio answers the cancel once the handler has stopped (after the step under way).
        with page.expect_response(lambda response: "gradio_api/cancel" in response.url, timeout=180_000):
            page.locator("#stop-button").click()
        page.locator("#quality input[value=fast]").check()
        page.locator("#stylize-button").click()
        status.get_by_text("Archived as entry").wait_for(timeout=180_000)
        SCREENSHOT.parent.mkdir(exist_ok=True)
        page.screenshot(path=str(SCREENSHOT.with_name("browser-best-quality.png")), full_page=True)
    # One stylisation at a time: had the refinement gone on after Stop, it would have finished and been
    # archived before the fast run. Only the fast run's entry is there.
    entries = Archive(archive_dir).search()
    assert [entry.record.settings["quality"] for entry in entries] == ["fast"]
