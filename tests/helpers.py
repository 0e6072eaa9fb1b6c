"""What the tests share besides fixtures: the real radiographs and DICOM files in tests/data/
(sources and licences: data/MANIFEST.tsv) and the repository's root."""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).parent / "data"
IMAGES = DATA / "images"
DICOMS = DATA / "dicom"
RG1_J2K_MONOCHROME1 = DICOMS / "RG1_J2KI.dcm"
RG2_HIP = DICOMS / "RG2_JPLL.dcm"
SIIM = DICOMS / "siim_1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm"
SIIM_FLIPPED = DICOMS / "txv_Fake_MONOHR1.dcm"


@contextlib.contextmanager
def headless_chromium(what: str):
    """Debian's Chromium driven by Playwright (``what`` names the tests that need it)."""
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    assert executable, f"{what} need Debian's chromium (apt-get install chromium)"
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox", "--disable-dev-shm-usage"])
        try:
            yield browser
        finally:
            browser.close()


def inside(polygon, column: float, row: float) -> bool:
    """(column, row) on or inside the closed polygon [N, 2] of (column, row) pairs."""
    return cv2.pointPolygonTest(np.asarray(polygon, np.float32).reshape(-1, 1, 2), (column, row), False) >= 0
