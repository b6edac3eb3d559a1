"""A real headless Chromium for the dashboard's tests, driven by Playwright.

The browser is the system's (Debian's ``chromium`` package; ``STEPLINE_CHROMIUM`` names another
binary): Playwright's own browser downloads are not used, and nothing is installed at run time.
Without Playwright or a browser the tests skip and say which is missing.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Browser

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def chromium_path() -> str | None:
    """The browser binary: ``STEPLINE_CHROMIUM``, else the first of :data:`CANDIDATES` on PATH."""
    given = os.environ.get("STEPLINE_CHROMIUM")
    if given:
        return given
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


@contextmanager
def chromium() -> Iterator[Browser]:
    """A launched headless browser, or a skip saying what is missing."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install -e '.[test]')")
    path = chromium_path()
    if path is None:
        pytest.skip("no Chromium found (apt-get install chromium, or set STEPLINE_CHROMIUM)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=path, headless=True)
        try:
            yield browser
        finally:
            browser.close()
