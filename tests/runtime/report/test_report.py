"""HTML reports: written by `explain --report` and `report`, checked as HTML and in headless
Chromium (Debian's chromium, driven by Playwright) with the network blocked."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from chexplain.cli import main
from chexplain.grammar import DEFAULT_LRP

from helpers import RG1_J2K_MONOCHROME1, headless_chromium

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory, default_onnx: Path, radiographs: list[Path]) -> Path:
    """A real CR DICOM and a PNG explained with reports (Grad-CAM + LRP epsilon, top 3)."""
    out = tmp_path_factory.mktemp("reports") / "results"
    result = CliRunner().invoke(main, ["explain", str(RG1_J2K_MONOCHROME1), str(radiographs[0]), "--model",
                                       str(default_onnx), "--out", str(out), "--report"])
    assert result.exit_code == 0, result.output
    return out


def report_of(results: Path, stem: str) -> Path:
    return next(p for p in results.glob("*/report.html") if p.parent.name.startswith(stem))


def test_reports_are_self_contained_and_hide_the_patient(results):
    page = report_of(results, "rg1").read_text()
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page) and "url(http" not in page
    assert page.count('<li class="bar') == 14 and page.count('<article class="finding"') == 3
    assert page.count('data-method="gradcam"') == 3 and page.count(f'data-method="{DEFAULT_LRP}"') == 3
    assert "NOT FOR CLINICAL USE" in page and "densenet121-chexpert" in page
    assert "CompressedSamples" not in page  # RG1's patient name
    index = (results / "index.html").read_text()
    assert index.count("<tr>") == 3 and "report.html" in index  # header + two radiographs


def test_report_command_rebuilds_from_a_moved_folder_and_can_show_the_patient(results, tmp_path):
    moved = tmp_path / "moved"
    shutil.copytree(results, moved)
    for page in moved.glob("*/report.html"):
        page.unlink()
    result = CliRunner().invoke(main, ["report", str(moved), "--patient-name"])
    assert result.exit_code == 0, result.output
    assert "CompressedSamples^RG1" in report_of(moved, "rg1").read_text()
    assert "reports: 2" in result.output


def test_report_needs_the_arrays(default_onnx, radiographs, tmp_path):
    result = CliRunner().invoke(main, ["explain", str(radiographs[0]), "--model", str(default_onnx), "--out",
                                       str(tmp_path), "--report", "--no-arrays"])
    assert result.exit_code == 2 and "drop --no-arrays" in result.output
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "index.json").write_text(json.dumps({"schema": "something else"}))
    result = CliRunner().invoke(main, ["report", str(bad)])
    assert result.exit_code == 1 and "not chexplain.explain/1" in result.output


@pytest.fixture(scope="module")
def browser():
    with headless_chromium("the report tests") as instance:
        yield instance


def open_offline(browser, path: Path, viewport: dict):
    """A page with every request other than the file itself recorded and aborted, offline,
    and CSP violations collected."""
    context = browser.new_context(viewport=viewport, offline=True)
    context.add_init_script("window.__violations = [];"
                            "document.addEventListener('securitypolicyviolation', e => window.__violations.push(e.blockedURI));")
    attempts = []

    def route(request_route):
        url = request_route.request.url
        if url == path.as_uri():
            request_route.continue_()
        else:
            attempts.append(url)
            request_route.abort()

    context.route("**/*", route)
    page = context.new_page()
    page.goto(path.as_uri())
    page.wait_for_load_state("load")
    return context, page, attempts


def test_report_in_headless_chromium(browser, results, tmp_path):
    path = report_of(results, "rg1")
    context, page, attempts = open_offline(browser, path, {"width": 1920, "height": 1080})
    try:
        assert page.locator("li.bar").count() == 14
        probabilities = [float(x) for x in page.locator("li.bar").evaluate_all("els => els.map(e => e.dataset.probability)")]
        assert probabilities == sorted(probabilities, reverse=True)
        article = page.locator("#finding-0")
        heat = article.locator(".heat")
        assert heat.count() == 2
        for i in range(2):  # each overlay lies exactly on its radiograph, and has its image
            layer = heat.nth(i)
            radiograph = article.locator("figure").nth(i).locator(".radiograph")
            assert layer.bounding_box() == radiograph.bounding_box()
            assert layer.evaluate("e => getComputedStyle(e).backgroundImage").startswith('url("data:image/webp')
        assert float(heat.first.evaluate("e => getComputedStyle(e).opacity")) == pytest.approx(0.6)
        slider = article.locator("input.opacity")
        slider.focus()
        slider.fill("20")
        assert float(heat.first.evaluate("e => getComputedStyle(e).opacity")) == pytest.approx(0.2)
        for _ in range(4):  # keyboard: the slider moves with the arrow keys
            page.keyboard.press("ArrowRight")
        assert float(heat.first.evaluate("e => getComputedStyle(e).opacity")) == pytest.approx(0.24)
        toggle = article.locator("button.layout")
        toggle.focus()
        page.keyboard.press("Enter")
        assert toggle.get_attribute("aria-pressed") == "true"
        figures = article.locator("figure")
        assert figures.nth(0).is_visible() and not figures.nth(1).is_visible()
        article.locator(".methods input").nth(1).check()
        assert not figures.nth(0).is_visible() and figures.nth(1).is_visible()
        toggle.press("Enter")  # back to side by side
        assert toggle.get_attribute("aria-pressed") == "false" and figures.nth(0).is_visible()
        viewer = figures.nth(0).locator(".viewer")
        viewer.focus()
        page.keyboard.press("+")
        transforms = article.locator(".stage").evaluate_all("els => els.map(e => e.style.transform)")
        assert "scale(1.25)" in transforms[0] and transforms[0] == transforms[1]  # zoom follows in both panels
        page.keyboard.press("0")
        assert "scale(1)" in viewer.locator(".stage").evaluate("e => e.style.transform")
        shot = tmp_path / "report.png"
        page.screenshot(path=str(shot))
        image = cv2.imread(str(shot))
        assert image is not None and image.std() > 20 and len(np.unique(image.reshape(-1, 3), axis=0)) > 100
        assert page.evaluate("window.__violations") == []
    finally:
        context.close()
    assert attempts == []


def test_report_on_a_small_screen_and_the_sortable_index(browser, results):
    context, page, attempts = open_offline(browser, report_of(results, "rg1"), {"width": 1024, "height": 600})
    try:  # a 7-inch 1024x600 screen: nothing wider than the window
        assert page.evaluate("document.documentElement.scrollWidth") <= 1024
        assert page.locator("li.bar").first.is_visible()
    finally:
        context.close()
    context, page, more = open_offline(browser, results / "index.html", {"width": 1280, "height": 800})
    try:
        header = page.locator("th button", has_text="Cardiomegaly")
        header.click()
        values = page.locator("tbody tr").evaluate_all(
            "rows => rows.map(r => +r.cells[[...r.parentElement.parentElement.tHead.rows[0].cells]"
            ".findIndex(c => c.textContent === 'Cardiomegaly')].dataset.value)")
        assert values == sorted(values, reverse=True)
        assert header.locator("xpath=..").get_attribute("aria-sort") == "descending"
        header.click()
        assert header.locator("xpath=..").get_attribute("aria-sort") == "ascending"
        assert page.locator("tbody a").count() == 2
    finally:
        context.close()
    assert attempts == [] and more == []
