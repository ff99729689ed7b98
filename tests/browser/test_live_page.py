"""The live page in a real headless browser: a session's overlay appears, and changes after a predict.

What is asserted comes from screenshots (pixels where the page shows the picture); the DOM is only
used to wait for the page and to find where the picture is.
"""

from __future__ import annotations

import io
from collections.abc import Iterator

import numpy as np
import pytest
from nitrogen_client import overlay
from nitrogen_server.app import ServerThread
from PIL import Image
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait
from server_testkit import TcpClient, assert_tcp_pred, encode, server_settings

PANEL_BG, PRESSED = np.array(overlay.BG), np.array(overlay.PRESSED)  # the panel's background, a pressed cell


@pytest.fixture(scope="module")
def live() -> Iterator[ServerThread]:
    with ServerThread(server_settings(http_port=0)) as srv:
        yield srv


def scene(sky: tuple[int, int, int]) -> bytes:
    """A 320x240 frame: a sky of the given colour over brown ground."""
    img = np.zeros((240, 320, 3), np.uint8)
    img[:160] = sky
    img[160:] = (120, 80, 40)
    return encode(img, "PNG")


def shot_of(driver, element) -> np.ndarray:
    """The element as the browser painted it, cut from a full screenshot."""
    page = np.asarray(Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("RGB")).astype(int)
    r = element.rect
    x, y, w, h = (round(r[k]) for k in ("x", "y", "width", "height"))
    return page[y:y + h, x:x + w]


def wait_shown(driver, key: str, seq: int):
    """The session's picture, once the page has loaded the one for predict `seq`."""
    css = f'img[data-key="{key}"]'

    def loaded(d):
        found = d.find_elements(By.CSS_SELECTOR, css)
        if not found or not (found[0].get_attribute("data-src") or "").endswith(f"seq={seq}"):
            return None
        done = d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", found[0])
        return found[0] if done else None

    return WebDriverWait(driver, 60, poll_frequency=0.1).until(loaded, f"picture {seq} of {key} never loaded")


def close_to(pixels: np.ndarray, colour, tol: int = 40) -> float:
    """Fraction of pixels within tol of a colour."""
    return float((np.abs(pixels - np.asarray(colour)).max(axis=-1) < tol).mean())


def test_overlay_appears_and_changes_after_a_predict(live, browser, tmp_path):
    port = live.server.http.port
    browser.get(f"http://127.0.0.1:{port}/")
    WebDriverWait(browser, 30).until(lambda d: d.find_element(By.ID, "status").text == "live")
    with TcpClient(live.tcp_port) as tcp:
        first = scene((200, 40, 40))
        assert_tcp_pred(tcp.request({"type": "predict", "session": "player", "len": len(first), "seed": 1}, first))
        img = wait_shown(browser, "named:player", 1)
        before = shot_of(browser, img)
        Image.fromarray(before.astype(np.uint8)).save(tmp_path / "before.png")
        assert before.shape[:2] == (360, 860), before.shape
        frame, panel = before[:, :360], before[:, 360:]
        assert close_to(frame[:200], (200, 40, 40)) > 0.9, "the frame the model saw is not shown"
        assert close_to(frame[260:], (120, 80, 40)) > 0.9
        assert close_to(panel, PANEL_BG, 12) > 0.3, "no overlay panel"
        assert close_to(panel, PRESSED, 20) > 0.005, "the overlay shows no pressed buttons"

        second = scene((40, 60, 210))
        assert_tcp_pred(tcp.request({"type": "predict", "session": "player", "len": len(second), "seed": 2}, second))
        img = wait_shown(browser, "named:player", 2)
        after = shot_of(browser, img)
        Image.fromarray(after.astype(np.uint8)).save(tmp_path / "after.png")
    assert close_to(after[:200, :360], (40, 60, 210)) > 0.9, "the picture did not follow the predict"
    changed = np.abs(after[:, 360:] - before[:, 360:]).max(axis=-1) > 30
    assert changed.mean() > 0.001, "the overlay did not change with the new reply"
    row = browser.find_element(By.XPATH, '//td[text()="named:player"]/..')
    assert row.find_elements(By.TAG_NAME, "td")[3].text == "2"
