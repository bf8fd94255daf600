"""The demo in a real browser: headless Chromium drives every tab of the running app and checks that
what comes back is what each family's inference API returns for the same input.

Needs Debian's ``chromium`` (``.ci/run`` installs it when missing) and the ``demo`` extra (Gradio)
plus Playwright, both in the ``test`` extra. A screenshot of each tab is written to the test's
folder, or to ``$MULTIMODAL_LAB_SCREENSHOTS`` when set.
"""
from __future__ import annotations

import io
import os
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
TIMEOUT_MS = 60_000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def running(tmp_path_factory):
    """The demo app on a free port, serving tiny models of every family, and what it serves."""
    pytest.importorskip("gradio")
    pytest.importorskip("playwright")
    if CHROMIUM is None:
        pytest.skip("needs Debian's chromium package (apt-get install chromium; .ci/run installs it)")
    from demo_models import save_test_sequences, save_tiny_models

    from multimodal_lab import demo

    if os.environ.get("MULTIMODAL_LAB_DEMO_DATA"):  # a project's data folder with trained models (the docs' screenshots)
        data = Path(os.environ["MULTIMODAL_LAB_DEMO_DATA"])
        root = data / "06_models"
    else:
        data = tmp_path_factory.mktemp("project") / "data"
        root = data / "06_models"
        save_tiny_models(root)
        save_test_sequences(data)
    examples = tmp_path_factory.mktemp("examples")
    served = demo.load_models(root)
    app = demo.build_app(served, examples, root)
    port = _free_port()
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
               allowed_paths=[str(examples)])
    try:
        yield f"http://127.0.0.1:{port}/", served, root
    finally:
        app.close()


@pytest.fixture(scope="module")
def page(running):
    from playwright.sync_api import sync_playwright

    url = running[0]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 1100})
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(url)
        yield page
        browser.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    folder = os.environ.get("MULTIMODAL_LAB_SCREENSHOTS")
    path = Path(folder) if folder else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _open_tab(page, title: str) -> None:
    page.get_by_role("tab", name=title).click()


def _shown_image(page, selector: str) -> np.ndarray:
    """The pixels of the image a Gradio image component shows (fetched from the app as the browser did)."""
    image = page.locator(f"{selector} img").first
    image.wait_for(state="visible")
    body = page.request.get(image.get_attribute("src")).body()
    return np.asarray(Image.open(io.BytesIO(body)).convert("RGB"))


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    """A scene-world picture at 3x the models' size (the demo makes it their input as ingest would)."""
    from multimodal_lab.data.scene_render import render_scene

    path = tmp_path_factory.mktemp("photo") / "photo.png"
    scene = {"background": "grass", "background_seed": 3, "objects": [
        {"shape": "star", "colour": "yellow", "x": 0.3, "y": 0.35, "radius": 0.16},
        {"shape": "ring", "colour": "blue", "x": 0.7, "y": 0.65, "radius": 0.2}]}
    render_scene(scene, 192).save(path)
    return path


def test_story_tab_tells_the_story_of_an_uploaded_image(page, running, photo, shots):
    _, served, _ = running
    expected = served["story_gpt2"].api.tell(Image.open(photo))[0]
    assert expected  # the tiny model writes words (see demo_models)
    _open_tab(page, "Image -> story")
    page.locator("#story_gpt2-image input[type=file]").set_input_files(str(photo))
    page.locator("#story_gpt2-run").click()
    from playwright.sync_api import expect

    expect(page.locator("#story_gpt2-output textarea")).to_have_value(expected)
    page.screenshot(path=str(shots / "demo_story_gpt2.png"), full_page=True)


def test_caption_tab_captions_with_the_chosen_beams_and_shows_where_words_looked(page, running, photo, shots):
    _, served, _ = running
    from playwright.sync_api import expect

    expected = served["vit_captioner"].api.caption(Image.open(photo), num_beams=5)[0]
    _open_tab(page, "Image -> caption")
    page.locator("#vit_captioner-image input[type=file]").set_input_files(str(photo))
    page.locator("#vit_captioner-run").click()
    expect(page.locator("#vit_captioner-output textarea")).to_have_value(expected)
    overlay = _shown_image(page, "#vit_captioner-overlay")
    assert overlay.shape[0] > 64 and overlay.shape[1] > overlay.shape[0]  # the image and one map per word, side by side
    page.screenshot(path=str(shots / "demo_vit_captioner.png"), full_page=True)


def test_art_tab_draws_a_seed_and_the_next_one(page, running, shots):
    _, served, _ = running
    from playwright.sync_api import expect

    api = served["art_generator"].api
    _open_tab(page, "Seed -> engraving + caption")
    seed = page.locator("#art_generator-seed input")
    seed.fill("5")
    seed.press("Enter")  # the box's submit event carries the typed value (a click right after typing may not)
    image, caption, _ = api.generate(5)
    expect(page.locator("#art_generator-output textarea")).to_have_value(caption)
    shown = _shown_image(page, "#art_generator-image")
    assert np.array_equal(shown, np.asarray(image.resize((256, 256), resample=0)))  # the same pixels, PNG end to end
    page.locator("#art_generator-next").click()
    expect(page.locator("#art_generator-seed input")).to_have_value("6")
    expect(page.locator("#art_generator-output textarea")).to_have_value(api.generate(6)[1])
    page.screenshot(path=str(shots / "demo_art_generator.png"), full_page=True)


def test_continuation_tab_continues_an_example_from_the_test_split(page, running, shots):
    _, served, root = running
    from playwright.sync_api import expect

    from multimodal_lab.demo import continuation_examples

    rows = continuation_examples(root, root.parent / "examples_read_by_the_test")  # the app's examples, read alike
    assert rows  # (3 in the tiny test split; the demo shows up to 4)
    frames, sentences = rows[0][:4], rows[0][4:]
    _open_tab(page, "4 frames -> the 5th")
    page.locator("#story_continuation-examples tbody tr").first.click()
    for i, sentence in enumerate(sentences, start=1):
        expect(page.locator(f"#story_continuation-sentence{i} textarea")).to_have_value(sentence)
    page.locator("#story_continuation-run").click()
    result = served["story_continuation"].api.continue_story([Image.open(f) for f in frames], sentences)
    expect(page.locator("#story_continuation-output textarea")).to_have_value(result["sentence"])
    shown = _shown_image(page, "#story_continuation-image")
    assert np.array_equal(shown, np.asarray(result["image"].resize((256, 256), resample=0)))
    page.screenshot(path=str(shots / "demo_story_continuation.png"), full_page=True)
