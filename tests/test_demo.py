"""The demo without a browser: which model each tab serves, --model, a tab without a model, the CLI."""
from __future__ import annotations

import subprocess
import sys

import pytest

from multimodal_lab import demo


def _version(root, folder: str, version: str, complete: bool = True):
    path = root / folder / "model" / version / "model"
    path.mkdir(parents=True)
    if complete:
        (path / "config.json").write_text("{}")
    return path


def test_newest_model_is_the_newest_complete_version_of_the_inference_dataset(tmp_path):
    assert demo.newest_model("story_gpt2", tmp_path) is None
    _version(tmp_path, "story_gpt2", "2026-01-01T00.00.00.000Z")
    newest = _version(tmp_path, "story_gpt2", "2026-02-01T00.00.00.000Z")
    _version(tmp_path, "story_gpt2", "2026-03-01T00.00.00.000Z", complete=False)  # a save that did not finish
    assert demo.newest_model("story_gpt2", tmp_path) == newest
    # a family with variants serves its inference variant's model
    assert demo.model_dataset("art_generator") == "art_generator.composer.model"
    composer = _version(tmp_path, "art_generator.composer", "2026-01-01T00.00.00.000Z")
    _version(tmp_path, "art_generator.seed_vae", "2026-05-01T00.00.00.000Z")
    assert demo.newest_model("art_generator", tmp_path) == composer


def test_model_overrides_are_checked(tmp_path):
    good = _version(tmp_path, "x", "v")
    assert demo.parse_model_overrides([f"vit_captioner={good}"]) == {"vit_captioner": good}
    for value, message in ((f"nope={good}", "unknown family 'nope'"), ("story_gpt2", "family=path"),
                           (f"story_gpt2={tmp_path / 'missing'}", "no saved model there")):
        with pytest.raises(ValueError, match=message):
            demo.parse_model_overrides([value])
    with pytest.raises(ValueError, match="twice"):
        demo.parse_model_overrides([f"story_gpt2={good}", f"story_gpt2={good}"])


def test_a_family_without_a_model_shows_how_to_train_it(tmp_path):
    pytest.importorskip("gradio")
    served = demo.load_models(tmp_path)  # nothing trained under this root
    assert not any(entry.ready for entry in served.values())
    app = demo.build_app(served)
    texts = [c.get("props", {}).get("value") for c in app.config["components"]]
    for family in demo.TABS:
        assert any(isinstance(t, str) and f"kedro run --pipelines={family}" in t for t in texts), family


def test_a_model_that_does_not_load_is_reported_on_its_tab(tmp_path):
    broken = _version(tmp_path, "story_gpt2", "2026-01-01T00.00.00.000Z")  # config.json "{}": no family
    served = demo.load_models(tmp_path)
    assert not served["story_gpt2"].ready and str(broken) in served["story_gpt2"].problem


def test_the_cli_is_kedro_free_and_refuses_bad_arguments():
    code = "import sys, multimodal_lab.demo, multimodal_lab.__main__; sys.exit('kedro' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
    run = subprocess.run([sys.executable, "-m", "multimodal_lab", "demo", "--model", "nope=/x"],
                         capture_output=True, text=True)
    assert run.returncode == 2 and "unknown family 'nope'" in run.stderr
    helped = subprocess.run([sys.executable, "-m", "multimodal_lab", "demo", "--help"], capture_output=True, text=True)
    assert helped.returncode == 0 and "--model FAMILY=PATH" in helped.stdout
