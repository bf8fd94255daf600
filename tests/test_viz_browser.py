"""kedro-viz in a real browser: every model family's pipeline renders, its nodes named, its layers shown.

Starts ``kedro viz run`` on the test environment of a project copy and drives it with headless
Chromium (Debian's ``chromium``; ``.ci/run`` installs it when missing). A screenshot of each family's
graph is written to the test's folder, or to ``$MULTIMODAL_LAB_SCREENSHOTS`` when set.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from project_copy import make_project_copy

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FAMILIES = ("story_gpt2", "vit_captioner", "story_continuation", "art_generator")


def _free_port(low: int, high: int) -> int:
    for port in range(low, high):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {low}..{high}")


@pytest.fixture(scope="module")
def viz_url(tmp_path_factory):
    pytest.importorskip("playwright")
    if CHROMIUM is None:
        pytest.skip("needs Debian's chromium package (apt-get install chromium; .ci/run installs it)")
    project = make_project_copy(tmp_path_factory.mktemp("viz"))
    port = _free_port(4141, 4900)  # kedro viz looks for a free port upwards from the one given: keep it low
    kedro = str(Path(sys.executable).with_name("kedro"))
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    log = (project / "viz.log").open("w")
    server = subprocess.Popen([kedro, "viz", "run", "--no-browser", "--host", "127.0.0.1", "--port", str(port),
                               "--env", "test"], cwd=project, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(url + "api/main", timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail("kedro viz did not start:\n" + (project / "viz.log").read_text()[-3000:])
            time.sleep(1)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_every_family_pipeline_renders_with_named_nodes_and_layers(viz_url, tmp_path):
    import json

    from playwright.sync_api import sync_playwright

    shots = Path(os.environ.get("MULTIMODAL_LAB_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.set_default_timeout(60_000)
        for family in FAMILIES:
            graph = json.loads(urllib.request.urlopen(f"{viz_url}api/pipelines/{family}", timeout=30).read())
            tasks = [n["name"] for n in graph["nodes"] if n["type"] == "task"]
            assert tasks, family
            page.goto(f"{viz_url}?pid={family}")
            # the graph is drawn: its layer bands and the nodes' labels
            page.wait_for_function("document.body.innerText.includes('model_input')")
            page.wait_for_timeout(1500)  # the layout settles
            text = page.inner_text("body")
            assert family in text
            shown = [name for name in tasks if name in text or name.rsplit(".", 1)[-1] in text]
            assert len(shown) >= len(tasks) // 2, (family, tasks, shown)
            for layer in ("raw", "intermediate", "model_input"):  # bands of the visible nodes (a collapsed namespace hides its own)
                assert layer in text, (family, layer)
            for close in [*page.get_by_role("button", name="Dismiss").all(),  # notices over the graph
                          *page.locator(".feature-hints__close").all()]:
                if close.is_visible():
                    close.click()
            page.screenshot(path=str(shots / f"viz_{family}.png"))
        browser.close()
