"""The page in a real browser (Debian's headless Chromium through WebDriver): upload the example portrait and
driving video, choose face 0, make the geometric draft and check the result video plays for the right length; a
faceless picture shows its error; a screenshot of the finished page is kept (``outputs/test-artefacts/ui.png``)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from magicportrait.io.image import save_image
from magicportrait.io.video import probe_video
from shared_paths import PROJECT

pytest.importorskip("selenium", reason="the browser test needs selenium (bash scripts/setup.sh --dev)")
from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

BROWSER = next((shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome")
                if shutil.which(name)), None)
DRIVER = shutil.which("chromedriver")
ARTEFACTS = PROJECT / "outputs" / "test-artefacts"
pytestmark = pytest.mark.skipif(BROWSER is None or DRIVER is None, reason="no Chromium / chromedriver: install "
                                "Debian's chromium and chromium-driver (bash scripts/setup.sh --dev does)")
WAIT_S = 120


@pytest.fixture(scope="module")
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = BROWSER
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1400,2600", "--autoplay-policy=no-user-gesture-required"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    yield driver
    driver.quit()


def _wait(driver, condition, timeout=WAIT_S):
    return WebDriverWait(driver, timeout, poll_frequency=0.25).until(condition)


def _upload(driver, element_id: str, path: Path) -> None:
    field = _wait(driver, expected_conditions.presence_of_element_located(
        (By.CSS_SELECTOR, f"#{element_id} input[type=file]")))
    field.send_keys(str(path))


def _choose_face(driver, number: str) -> None:
    """Open the Face dropdown and click the option ``number`` (once the faces were found)."""
    _wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#faces img"))
    box = driver.find_element(By.CSS_SELECTOR, "#face input")
    box.click()
    option = _wait(driver, expected_conditions.element_to_be_clickable(
        (By.XPATH, f"//li[@data-testid='dropdown-option' and @aria-label='{number}']")))
    option.click()
    _wait(driver, lambda d: d.find_element(By.CSS_SELECTOR, "#face input").get_attribute("value") == number)


def _video_duration(driver) -> float:
    script = """
        const video = document.querySelector('#result video');
        if (!video || !video.src) return -1;
        if (video.readyState < 1) return -2;
        return video.duration;"""
    _wait(driver, lambda d: (d.execute_script(script) or -1) > 0)
    return float(driver.execute_script(script))


def test_draft_in_the_browser(ui_server, browser, example, tmp_path):
    browser.get(ui_server.url)
    _upload(browser, "portrait", example[0])
    _choose_face(browser, "0")
    _upload(browser, "driving", example[1])
    _wait(browser, lambda d: ".mp4" in d.find_element(By.CSS_SELECTOR, "#driving").text)
    browser.find_element(By.CSS_SELECTOR, "#draft").click()
    duration = _video_duration(browser)
    info = probe_video(example[1])
    assert duration == pytest.approx(info.num_frames / info.fps, abs=1.5 / info.fps)
    assert browser.execute_script("return document.querySelector('#result video').error") is None
    assert "Done." in browser.find_element(By.CSS_SELECTOR, "#status").text
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    browser.execute_script("window.scrollTo(0, 0)")
    time.sleep(0.5)
    browser.save_screenshot(str(ARTEFACTS / "ui.png"))

    blank = tmp_path / "no-face.png"
    save_image(blank, np.full((320, 320, 3), 180, np.uint8))
    browser.get(ui_server.url)
    _upload(browser, "portrait", blank)
    _wait(browser, lambda d: "No face found in the portrait" in d.find_element(By.TAG_NAME, "body").text)
