"""Fixtures for the browser tests: Debian's headless Chromium driven by Selenium through chromedriver
(both installed by .ci/setup.sh; Selenium is never let to download a browser or a driver)."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "server"))  # server_testkit: settings and wire clients

os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager: use what is installed, fetch nothing


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver_exe = shutil.which("chromium"), shutil.which("chromedriver")
    assert chromium and driver_exe, "chromium and chromium-driver are missing: run .ci/setup.sh"
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1100", "--force-device-scale-factor=1", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(driver_exe), options=options)
    try:
        yield driver
    finally:
        driver.quit()
