"""The page of `cli.py serve` in Debian's headless chromium: upload, result, temperature, download, errors.
Saves artifacts/serve_screenshot.png (look at it). Skipped only where chromium or chromedriver is absent;
.ci/run installs both."""
import base64
import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.images import load_rgb, rgb_to_lab

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                                reason="the browser test needs Debian's chromium and chromedriver "
                                       "(apt-get install chromium chromium-driver; .ci/run does)")
webdriver = pytest.importorskip("selenium.webdriver", reason="the browser test needs selenium (extra [test])")
pytest.importorskip("fastapi", reason="serve needs the web extra")

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT = ROOT / "artifacts" / "serve_screenshot.png"


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1400,1000",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"]:
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_script_timeout(60)
    yield driver
    driver.quit()


def wait_for_state(driver, states, timeout=90):
    from selenium.webdriver.support.ui import WebDriverWait
    WebDriverWait(driver, timeout).until(lambda d: d.find_element("tag name", "body").get_attribute("data-state")
                                         in states)
    return driver.find_element("tag name", "body").get_attribute("data-state")


def set_temperature(driver, t: float) -> None:
    """Move the slider as a user would (input while dragging, change on release); wait for the new result."""
    from selenium.webdriver.support.ui import WebDriverWait
    before = driver.find_element("tag name", "body").get_attribute("data-results")
    driver.execute_script(f"const t = document.getElementById('temperature'); t.value = {t};"
                          "t.dispatchEvent(new Event('input')); t.dispatchEvent(new Event('change'));")
    WebDriverWait(driver, 90).until(lambda d: d.find_element("tag name", "body").get_attribute("data-results")
                                    != before and d.find_element("tag name", "body").get_attribute("data-state")
                                    in ("done", "error"))
    assert driver.find_element("tag name", "body").get_attribute("data-state") == "done"


def download_link_bytes(driver) -> bytes:
    """What the page's Download button would save: the blob behind its href, read inside the page."""
    b64 = driver.execute_async_script("""
        const done = arguments[arguments.length - 1];
        fetch(document.getElementById('download').href).then(r => r.blob()).then(b => {
            const fr = new FileReader(); fr.onload = () => done(fr.result.split(',')[1]); fr.readAsDataURL(b); });""")
    return base64.b64decode(b64)


def test_the_page_colorizes_an_upload_in_a_real_browser(tmp_path, tiny_runs, browser, start_server):
    from skimage import data
    from colorfast.loader import load_colorizer
    photo = tmp_path / "chelsea.jpg"                     # 451 x 300 colour photo: odd width
    Image.fromarray(data.chelsea()).save(photo, quality=92)
    not_image = tmp_path / "notes.jpg"
    not_image.write_text("this is not a photo")
    colorizer = load_colorizer(tiny_runs[1]["ce"], device="cpu")
    with start_server(colorizer, size=64) as url:
        browser.get(url)
        assert "colorfast" in browser.title
        browser.find_element("id", "file").send_keys(str(photo))
        assert wait_for_state(browser, {"done", "error"}) == "done", browser.find_element("id", "status").text

        rgb_in = load_rgb(photo)
        out = np.asarray(Image.open(io.BytesIO(download_link_bytes(browser))).convert("RGB"))
        assert out.shape == rgb_in.shape                                     # full resolution
        dL = np.abs(rgb_to_lab(out)[..., 0] - rgb_to_lab(rgb_in)[..., 0])
        assert dL.max() < 1.0, dL.max()                                      # the input's lightness
        shown = browser.execute_script("const i = document.getElementById('result'); return [i.naturalWidth, i.naturalHeight];")
        assert shown == [451, 300]
        assert browser.find_element("id", "download").get_attribute("download") == "chelsea-colorized.png"
        assert "451 × 300" in browser.find_element("id", "status").text

        set_temperature(browser, 0.9)
        assert "temperature 0.9" in browser.find_element("id", "status").text
        warmer = np.asarray(Image.open(io.BytesIO(download_link_bytes(browser))).convert("RGB"))
        assert not np.array_equal(warmer, out)                               # a new result at the new temperature
        set_temperature(browser, 0.38)
        browser.execute_script("const s = document.getElementById('split'); s.value = 38;"
                               "s.dispatchEvent(new Event('input'));")        # before/after split at 38%
        SCREENSHOT.parent.mkdir(exist_ok=True)
        browser.save_screenshot(str(SCREENSHOT))

        browser.find_element("id", "file").send_keys(str(not_image))
        assert wait_for_state(browser, {"error"}) == "error"
        status = browser.find_element("id", "status")
        assert "not an image" in status.text and "error" in status.get_attribute("class")
        assert browser.find_element("id", "download").get_attribute("aria-disabled") == "true"   # no stale result
        browser.save_screenshot(str(SCREENSHOT.with_name("serve_screenshot_error.png")))
