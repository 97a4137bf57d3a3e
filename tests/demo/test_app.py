"""demo/app.py: the prediction function (API level) and the page in a real headless Chromium."""
import importlib.util
import json
import os
import shutil
import socket
import sys
import urllib.request

import numpy as np
import pytest
from PIL import Image

from tests.tiny import REPO

sys.path.insert(0, os.path.join(REPO, "demo"))
import app as web_app  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.fixture(scope="module")
def segmentation_app(tmp_path_factory):
    predictor = web_app.build_predictor(None, None, "cpu", [])  # the bundled model, offline
    return web_app.SegmentationApp(predictor, str(tmp_path_factory.mktemp("app_out")))


def test_predict_all_tasks_gives_overlays_table_and_files(segmentation_app):
    sample = web_app.SAMPLES[0]
    r = segmentation_app.predict(sample, "all")
    assert r.ok and r.message.startswith("sample_0.png (256×256): panoptic: ")
    assert [caption for _, caption in r.overlays] == ["panoptic", "semantic", "instance"]
    assert all(img.shape == (256, 256, 3) and img.dtype == np.uint8 for img, _ in r.overlays)
    tasks = {row[0] for row in r.rows}
    assert tasks == {"panoptic", "semantic", "instance"}
    names = set(segmentation_app.names)
    for task, cls, score, area in r.rows:
        assert cls in names and 0.0 <= score <= 1.0 and 0 < area <= 256 * 256
    # the panoptic rows are the panoptic segments, their areas the pixels of each id
    pan = segmentation_app.predictor(sample, task="panoptic")[0]["panoptic_seg"]
    pan_rows = [row for row in r.rows if row[0] == "panoptic"]
    assert [row[3] for row in pan_rows] == [int((pan[0] == s["id"]).sum()) for s in pan[1]]
    names_by_file = {os.path.basename(f): f for f in r.files}
    assert sorted(names_by_file) == ["sample_0_instances.json", "sample_0_panoptic.json", "sample_0_panoptic.png",
                                     "sample_0_semantic.png"]
    with open(names_by_file["sample_0_panoptic.json"]) as f:
        entry = json.load(f)["annotations"][0]
    assert len(entry["segments_info"]) == len(pan_rows)
    assert Image.open(names_by_file["sample_0_semantic.png"]).size == (256, 256)
    with open(names_by_file["sample_0_instances.json"]) as f:
        assert len(json.load(f)) == sum(1 for row in r.rows if row[0] == "instance")


def test_bad_uploads_get_a_message(segmentation_app, tmp_path):
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    truncated = tmp_path / "cut.png"
    truncated.write_bytes(open(web_app.SAMPLES[0], "rb").read()[:200])
    cases = [
        (None, "panoptic", "Upload an image or pick a sample first"),
        (str(text), "panoptic", "Cannot use this upload: .*notes.png: cannot read the image"),
        (str(truncated), "semantic", "Cannot use this upload: .*cut.png"),
        (web_app.SAMPLES[0], "depth", "Unknown task 'depth'"),
        (np.zeros((8, 8, 2), np.uint8), "panoptic", "Cannot use this upload: image: expected 1, 3 or 4 channels"),
    ]
    import re

    for image, task, pattern in cases:
        r = segmentation_app.predict(image, task)
        assert not r.ok and re.search(pattern, r.message), (pattern, r.message)
        assert r.overlays == r.rows == r.files == []
    small = web_app.SegmentationApp(segmentation_app.predictor, str(tmp_path), max_pixels=100)
    r = small.predict(web_app.SAMPLES[0], "panoptic")
    assert not r.ok and "256×256 pixels, more than this app takes (100" in r.message


def test_bad_upload_message_names_the_file_not_the_server_path(segmentation_app, tmp_path):
    """An upload is a server-side temporary file: the message names the file as uploaded, not where it is kept."""
    folder = tmp_path / "gradio" / "4f0c2b9e7d"
    folder.mkdir(parents=True)
    from pathlib import Path

    sample = Path(web_app.SAMPLES[0]).read_bytes()
    for name, content, problem in (("notes.png", b"not an image", "cannot read the image"),
                                   ("cut.png", sample[:200], "cannot read the image"),
                                   ("empty.jpg", b"", "the file is empty")):
        (folder / name).write_bytes(content)
        r = segmentation_app.predict(str(folder / name), "panoptic")
        assert not r.ok and r.message.startswith(f"Cannot use this upload: {name}: {problem}"), r.message
        assert str(tmp_path) not in r.message and "4f0c2b9e7d" not in r.message, r.message


def test_page_callback_never_raises(segmentation_app, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(segmentation_app, "predictor", type("P", (), {"__call__": broken, "load_image": broken})())
    overlays, rows, files, message = segmentation_app.gradio_predict(web_app.SAMPLES[0], "panoptic")
    assert overlays == [] and rows is None and files is None
    assert message == "**Error:** Segmentation failed: RuntimeError: out of memory"


def test_command_line_errors_are_one_line(capsys):
    assert web_app.main(["--config-file", os.path.join(REPO, "configs/synthetic/oneformer_synthetic.yaml"),
                         "--opts", "MODEL.NO_SUCH_KEY", "1"]) == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_compile_flag_reaches_the_predictor(monkeypatch):
    """--compile: the predictor compiles the network (which says on the console when a compile starts and ends)."""
    pytest.importorskip("gradio")
    seen = {}

    def build(*args):
        seen["args"] = args
        raise ValueError("stop here")

    monkeypatch.setattr(web_app, "build_predictor", build)
    assert web_app.main(["--compile"]) == 2 and seen["args"][-1] is True
    monkeypatch.undo()
    predictor = web_app.build_predictor(None, None, "cpu", ["MODEL.COMPILE_BACKEND", "eager"], compile=True)
    assert predictor.cfg.MODEL.COMPILE and predictor.model.compiled is not None


# ----------------------------------------------------------------------------------------------------------------
# the page in a browser


def _browser_or_skip():
    """(gradio, selenium webdriver) or skip, except under CI (CI=true), where the test setup installs them."""
    missing = [name for name, ok in (("gradio", importlib.util.find_spec("gradio")),
                                     ("selenium", importlib.util.find_spec("selenium")),
                                     ("chromium", CHROMIUM), ("chromedriver", CHROMEDRIVER)) if not ok]
    if missing:
        why = f"the browser test needs {', '.join(missing)} (make test installs them)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(why)
        pytest.skip(why)
    import gradio
    from selenium import webdriver

    return gradio, webdriver


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def browser_page(segmentation_app):
    gr, webdriver = _browser_or_skip()
    from selenium.webdriver.chrome.service import Service

    port = _free_port()
    page = segmentation_app.build()
    page.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, ssr_mode=False, quiet=True,
                theme=gr.themes.Default(font=["sans-serif"], font_mono=["monospace"]))
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    # headless, and no background connections: this machine's network is closed
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1400,1100"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        driver.get(f"http://127.0.0.1:{port}/")
        yield driver
    finally:
        driver.quit()
        page.close()


def _upload_and_run(driver, path: str, wait_for: str):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    driver.refresh()  # a fresh page: no earlier upload or result
    wait = WebDriverWait(driver, 60)
    file_input = wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "#upload input[type=file]")))
    file_input.send_keys(path)
    # the upload finished when the component shows the file's name (its stem and extension on two lines)
    wait.until(EC.text_to_be_present_in_element((By.ID, "upload"), os.path.splitext(os.path.basename(path))[0]))
    driver.find_element(By.CSS_SELECTOR, "#run").click()
    wait.until(EC.text_to_be_present_in_element((By.ID, "message"), wait_for))
    return driver.find_element(By.ID, "message").text


def test_browser_upload_shows_the_segments(browser_page, segmentation_app, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver = browser_page
    sample = web_app.SAMPLES[1]
    message = _upload_and_run(driver, sample, "segments")
    expected = segmentation_app.predict(sample, "panoptic")
    assert message == expected.message
    # the table lists every segment: each class name with its area
    WebDriverWait(driver, 30).until(lambda d: str(expected.rows[-1][3]) in d.find_element(By.ID, "segments").text)
    table = driver.find_element(By.ID, "segments").text
    for _, cls, _, area in expected.rows:
        assert cls in table and str(area) in table
    assert driver.find_elements(By.CSS_SELECTOR, "#overlay img")  # the overlay is shown
    files = driver.find_element(By.ID, "files").text.replace("\n", "")  # names are shown as stem + extension lines
    assert "sample_1_panoptic.png" in files and "sample_1_panoptic.json" in files
    # the files download: the JSON link serves the COCO panoptic entry of these segments
    links = [a.get_attribute("href") for a in driver.find_elements(By.CSS_SELECTOR, "#files a")]
    json_link = [h for h in links if h and h.split("?")[0].endswith("sample_1_panoptic.json")]
    assert json_link, links
    with urllib.request.urlopen(json_link[0], timeout=30) as response:
        served = json.load(response)
    assert len(served["annotations"][0]["segments_info"]) == len(expected.rows)
    shot = os.environ.get("ONEFORMER_APP_SCREENSHOT")
    driver.save_screenshot(shot or str(tmp_path / "app.png"))


def test_browser_bad_upload_shows_a_message(browser_page, tmp_path):
    from selenium.webdriver.common.by import By

    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    message = _upload_and_run(browser_page, str(bad), "Cannot use this upload")
    assert "broken.png: cannot read the image" in message
    assert "Traceback" not in browser_page.find_element(By.TAG_NAME, "body").text
