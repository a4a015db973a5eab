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
        assert not browser.find_element("id", "hintbar").is_displayed()      # this checkpoint takes no hints
        assert browser.find_element("id", "temperature").is_displayed()

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


# ---- colour hints (a guided checkpoint) -------------------------------------------------------------------------
HINT_SCREENSHOT = ROOT / "artifacts" / "serve_hints_screenshot.png"


def wait_idle(driver, timeout=120):
    """Until the page has no request in flight or pending (colorize and suggest) and shows a result."""
    from selenium.webdriver.support.ui import WebDriverWait
    WebDriverWait(driver, timeout).until(lambda d: d.execute_script(
        "return !S.busy && !S.again && !S.suggesting && !S.suggestAgain && document.body.dataset.state === 'done'"))


def click_photo(driver, x: int, y: int, W: int, H: int) -> None:
    """A click on the original at photo pixel (x, y), as a person's (pointer events, from the mouse)."""
    from selenium.webdriver.common.action_chains import ActionChains
    img = driver.find_element("id", "input")
    r = img.rect
    dx, dy = (x + 0.5) / W * r["width"] - r["width"] / 2, (y + 0.5) / H * r["height"] - r["height"] / 2
    ActionChains(driver).move_to_element_with_offset(img, round(dx), round(dy)).click().perform()


def result_ab(driver) -> np.ndarray:
    rgb = np.asarray(Image.open(io.BytesIO(download_link_bytes(driver))).convert("RGB"))
    return rgb_to_lab(rgb)[..., 1:]


def ab_near(ab, x, y, r=3):
    return ab[y - r:y + r + 1, x - r:x + r + 1].reshape(-1, 2).mean(0)


def cosine(u, v) -> float:
    return float(np.dot(u, v) / (np.linalg.norm(u) * np.linalg.norm(v) + 1e-9))


def test_hints_in_a_real_browser_place_pick_drag_delete(tmp_path, browser, start_server, monkeypatch):
    """Two hints placed with the mouse, one coloured from the suggested swatches and one from the picker: the
    result's ab near each moves toward its colour; a drag moves the colour, Delete removes it; while a request
    runs the page keeps taking edits and sends only the latest state when it returns."""
    import threading
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys
    from skimage import data
    import colorfast.serve as serve
    from colorfast.loader import load_colorizer
    from guided_weights import LIKELY, save_hint_copy
    photo = tmp_path / "chelsea.jpg"                     # 451 x 300
    Image.fromarray(data.chelsea()).save(photo, quality=92)
    W, H = 451, 300
    calls, gate = [], threading.Event()
    gate.set()
    colorize_file = serve.colorize_file

    def counted(job, colorizer, path, size, temperature, hints=()):
        calls.append([(h.x, h.y, h.ab) for h in hints])
        assert gate.wait(60)
        return colorize_file(job, colorizer, path, size, temperature, hints)

    monkeypatch.setattr(serve, "colorize_file", counted)
    colorizer = load_colorizer(save_hint_copy(tmp_path / "copy.pt"), device="cpu")
    with start_server(colorizer, size=128) as url:
        browser.get(url)
        from selenium.webdriver.support.ui import WebDriverWait
        WebDriverWait(browser, 30).until(lambda d: d.find_element("id", "hintbar").is_displayed())
        browser.find_element("id", "file").send_keys(str(photo))
        wait_idle(browser)
        assert np.abs(result_ab(browser)).max() < 3                          # no hints: this network adds no colour

        # hint 1: placed with the mouse, coloured from the swatches (the class head's likely colours there)
        click_photo(browser, 120, 100, W, H)
        wait_idle(browser)
        swatches = browser.find_elements("css selector", "#swatches button")
        assert len(swatches) == 6
        swatches[0].click()
        wait_idle(browser)
        assert calls[-1] == [(120.0, 100.0, tuple(float(v) for v in LIKELY[0]))]   # the swatch's exact ab
        # hint 2: from the picker
        click_photo(browser, 330, 200, W, H)
        wait_idle(browser)
        browser.execute_script("const p = document.getElementById('picker'); p.value = '#2050d0';"
                               "p.dispatchEvent(new Event('input')); p.dispatchEvent(new Event('change'));")
        wait_idle(browser)
        assert browser.find_element("tag name", "body").get_attribute("data-hints") == "2"
        ab = result_ab(browser)
        blue = rgb_to_lab(np.array([[[0x20, 0x50, 0xd0]]], np.uint8))[0, 0, 1:]
        for (x, y), want in (((120, 100), np.array(LIKELY[0], np.float32)), ((330, 200), blue)):
            got = ab_near(ab, x, y)
            assert cosine(got, want) > 0.95 and np.linalg.norm(got) > 0.4 * np.linalg.norm(want), (x, y, got, want)
        assert np.abs(ab[:20, -20:]).max() < 3                               # far from both: still gray
        HINT_SCREENSHOT.parent.mkdir(exist_ok=True)
        browser.save_screenshot(str(HINT_SCREENSHOT))

        # drag hint 2 by (+40, -120) photo px: its colour goes with it
        mark = browser.find_elements("css selector", "#marks .mark")[1]
        scale = browser.find_element("id", "input").rect["width"] / W
        ActionChains(browser).click_and_hold(mark).move_by_offset(round(20 * scale), round(-60 * scale)) \
            .move_by_offset(round(20 * scale), round(-60 * scale)).release().perform()
        wait_idle(browser)
        (x2, y2, _), = [h for h in calls[-1] if h[0] != 120.0]
        assert abs(x2 - 370) <= 2 and abs(y2 - 80) <= 2, (x2, y2)
        ab = result_ab(browser)
        assert cosine(ab_near(ab, int(x2), int(y2)), blue) > 0.95 and np.abs(ab_near(ab, 330, 200)).max() < 3

        # a request that takes long: the page keeps taking edits and then sends the latest state only
        gate.clear()
        n = len(calls)
        browser.execute_script("const p = document.getElementById('picker'); p.value = '#d02020';"
                               "p.dispatchEvent(new Event('change'));")
        WebDriverWait(browser, 30).until(lambda d: len(calls) == n + 1)    # held in the server
        click_photo(browser, 60, 250, W, H)                                  # a third hint meanwhile
        assert browser.find_element("tag name", "body").get_attribute("data-hints") == "3"
        for color in ("#20d020", "#d0d020", "#20d0d0"):
            browser.execute_script(f"const p = document.getElementById('picker'); p.value = '{color}';"
                                   "p.dispatchEvent(new Event('change'));")
        assert browser.find_element("tag name", "body").get_attribute("data-state") == "busy"
        gate.set()
        wait_idle(browser)
        assert len(calls) == n + 2, calls[n:]                               # the held one, then the latest only
        cyan = rgb_to_lab(np.array([[[0x20, 0xd0, 0xd0]]], np.uint8))[0, 0, 1:]
        assert cosine(ab_near(result_ab(browser), 60, 250), cyan) > 0.95

        # select hint 1 and delete it with the keyboard
        browser.find_elements("css selector", "#marks .mark")[0].click()
        ActionChains(browser).send_keys(Keys.DELETE).perform()
        wait_idle(browser)
        assert browser.find_element("tag name", "body").get_attribute("data-hints") == "2"
        assert len(calls[-1]) == 2 and np.abs(ab_near(result_ab(browser), 120, 100)).max() < 3
