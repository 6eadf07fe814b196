"""The web view's page in a real headless browser (Debian's chromium and its chromedriver) on a phone-sized window."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.broker import Broker, free_port, until
from tests.test_web import broker, start_web_daemon, stop, video, wait_healthy, wait_metric, web_config  # noqa: F401

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                                reason="chromium is not installed (apt-get install chromium chromium-driver)")
PHONE = (412, 915)  # CSS pixels of a common phone
PASSWORD = "correct horse battery"


@pytest.fixture
def browser(monkeypatch: pytest.MonkeyPatch) -> Iterator:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager must not fetch a driver: Debian's is given
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--no-first-run", "--no-default-browser-check",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-extensions"):
        options.add_argument(arg)
    options.add_experimental_option("mobileEmulation", {"deviceMetrics": {"width": PHONE[0], "height": PHONE[1],
                                                                          "pixelRatio": 1.0, "touch": True}})
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def console_errors(driver) -> list[str]:
    """The page's console errors since the last call."""
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def wait(driver, check, timeout: float = 30):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.2).until(check)


def faces_text(driver) -> str:
    return driver.find_element("id", "faces").text


@pytest.fixture
def open_view(tmp_path: Path, broker: Broker, video: Path) -> Iterator:  # noqa: F811
    config = web_config(tmp_path / "c.yaml", video, broker.port, free_port())
    d = start_web_daemon(tmp_path, config)
    try:
        wait_healthy(d)
        yield d
    finally:
        stop(d)


def shot(element) -> np.ndarray:
    picture = cv2.imdecode(np.frombuffer(element.screenshot_as_png, np.uint8), cv2.IMREAD_COLOR)
    assert picture is not None
    return picture


def test_the_page_shows_the_live_picture_the_face_and_its_events(browser, open_view) -> None:
    browser.get(f"http://127.0.0.1:{open_view.port}/")
    wait(browser, lambda b: "happy" in faces_text(b))
    # Read in one go: the cards are drawn anew with each state.
    card = browser.execute_script("const c = document.querySelector('#faces .face');"
                                  "return c && [c.dataset.emotion, c.querySelectorAll('.bar').length]")
    assert card == ["happy", 7]  # a score bar per emotion
    wait(browser, lambda b: b.find_elements("css selector", "#events li[data-type=start]"))
    assert "camera ok" in browser.find_element("id", "camera").text
    assert browser.find_element("id", "mqtt").text == "MQTT connected"
    img = browser.find_element("id", "live")
    wait(browser, lambda b: b.execute_script("return arguments[0].naturalWidth", img) == 640)
    # Two looks at the picture, a few frames apart (the video's frame number is drawn in it): it changed.
    first = shot(img)
    frames = open_view.metrics()["edge_fer_web_encoded_frames_total"]
    wait_metric(open_view, lambda m: m["edge_fer_web_encoded_frames_total"] >= frames + 2)
    assert until(lambda: np.abs(shot(img).astype(int) - first).max() > 50, 10), "the picture did not change"
    # Fits a phone: nothing wider than the screen, the picture as wide as it can be.
    assert browser.execute_script("return window.innerWidth") == PHONE[0]
    assert browser.execute_script("return document.documentElement.scrollWidth") <= PHONE[0]
    assert PHONE[0] * 0.9 <= img.size["width"] <= PHONE[0]
    assert console_errors(browser) == []


@pytest.fixture
def locked_view(tmp_path: Path, broker: Broker, video: Path) -> Iterator:  # noqa: F811
    config = web_config(tmp_path / "c.yaml", video, broker.port, free_port(), password_env="EDGE_FER_WEB_PASSWORD")
    config.write_text(config.read_text().replace("127.0.0.1:", "0.0.0.0:"))
    d = start_web_daemon(tmp_path, config, env={"EDGE_FER_WEB_PASSWORD": PASSWORD})
    try:
        wait_healthy(d)
        yield d
    finally:
        assert PASSWORD not in stop(d)


def log_in(driver, password: str) -> None:
    field = driver.find_element("id", "password")
    field.clear()
    field.send_keys(password)
    driver.find_element("id", "submit").click()


def test_off_loopback_the_page_asks_for_the_password_and_refuses_a_wrong_one(browser, locked_view) -> None:
    browser.get(f"http://127.0.0.1:{locked_view.port}/")
    wait(browser, lambda b: b.current_url.endswith("/login"))
    log_in(browser, "not the password")
    wait(browser, lambda b: b.find_elements("id", "message"))
    assert browser.find_element("id", "message").text == "Wrong password."
    assert browser.current_url.endswith("/login") and browser.get_cookies() == []
    console_errors(browser)  # the refusal's 401 is in the console: expected, and cleared here
    log_in(browser, PASSWORD)
    wait(browser, lambda b: "happy" in faces_text(b))
    assert [c["name"] for c in browser.get_cookies()] == ["edge_fer_session"]
    assert browser.get_cookies()[0]["httpOnly"] is True
    assert browser.find_element("id", "logout").is_displayed()
    assert console_errors(browser) == []
    browser.find_element("css selector", "#logout button").click()
    wait(browser, lambda b: b.current_url.endswith("/login"))
    browser.get(f"http://127.0.0.1:{locked_view.port}/")
    wait(browser, lambda b: b.current_url.endswith("/login"))
