"""Headless Chromium (Debian's chromium + chromium-driver) for page tests."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"

needs_browser = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="needs Debian's chromium and chromium-driver (scripts/setup.sh installs them as root)",
)


def open_browser(tmp_path: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1366,900",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def inspect_page(driver, path: Path, screenshot: str) -> dict:
    """Load a page; return console errors, undecoded images and section ids; save a
    full-page screenshot under test-artifacts/."""
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(path.resolve().as_uri())
    # get() returns at the load event; wait for the document to say it is complete too
    # (an event of the page, with a generous cap for a loaded machine, not a sleep)
    WebDriverWait(driver, 120).until(
        lambda d: d.execute_script("return document.readyState") == "complete"
    )
    state = driver.execute_script(
        "return {ready: document.readyState,"
        " images: Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth]),"
        " sections: Array.from(document.querySelectorAll('section')).map(s => s.id),"
        " height: document.body.scrollHeight}"
    )
    errors = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
    ARTIFACTS.mkdir(exist_ok=True)
    driver.set_window_size(1366, min(int(state["height"]) + 50, 16000))
    driver.save_screenshot(str(ARTIFACTS / screenshot))
    return {"errors": errors, **state}
