"""Every parameter block fits its config class, in every environment and in every docs example."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from kedro.config import OmegaConfigLoader

from multimodal_lab.parameters import ParameterError, check_parameters

PROJECT_ROOT = Path(__file__).resolve().parents[1]
YAML_BLOCK = re.compile(r"```yaml\n(.*?)```", re.S)


def merged_parameters(env: str) -> dict:
    """The parameters as Kedro merges them for ``--env=env`` (base, then env, soft merge)."""
    from multimodal_lab.settings import CONFIG_LOADER_ARGS

    loader = OmegaConfigLoader(str(PROJECT_ROOT / "conf"), env=env, **CONFIG_LOADER_ARGS)
    return loader["parameters"]


@pytest.mark.parametrize("env", ["base", "test", "gpu"])
def test_every_environment_fits(env):
    check_parameters(merged_parameters(env))


def test_typos_stray_blocks_and_bad_values_are_all_reported_together():
    params = merged_parameters("base")
    params["ingest"]["workerz"] = 2
    params["web"] = {"start_urls": ["https://example.org/"]}  # pasted at the top level
    params["caption"]["model"] = "Salesforce/blip2-opt-2.7b"  # the BLIP-2 block is `captioning`
    params["story_gpt2"]["model"]["encoder"]["chanels"] = [8]
    params["split"]["test"] = 0.5  # shares no longer add up to 1
    with pytest.raises(ParameterError) as info:
        check_parameters(params)
    message = str(info.value)
    for expected in (
        "'workerz' (did you mean 'workers'?) in params:ingest",
        "params:web is read by nothing (did you mean params:sources.web?)",
        "params:caption.model is read by nothing (did you mean params:captioning?)",
        "'chanels' (did you mean 'channels'?)",
        "they must add up to 1",
    ):
        assert expected in message, expected


def test_a_disabled_block_may_hold_placeholders_but_not_unknown_keys():
    params = merged_parameters("base")
    params["sources"]["web"]["start_urls"] = []  # fine while the crawl is off
    check_parameters(params)
    params["sources"]["web"]["enabled"] = True
    with pytest.raises(ParameterError, match="start_urls is empty"):
        check_parameters(params)
    params["sources"]["web"].update(enabled=False, max_pagez=3)
    with pytest.raises(ParameterError, match=r"'max_pagez' \(did you mean 'max_pages'\?\)"):
        check_parameters(params)


def docs_examples() -> list[tuple[str, int, str]]:
    examples = []
    for page in sorted((PROJECT_ROOT / "docs").glob("*.md")) + [PROJECT_ROOT / "README.md"]:
        for number, match in enumerate(YAML_BLOCK.finditer(page.read_text())):
            examples.append((page.name, number, match.group(1)))
    return examples


def test_the_docs_have_parameter_examples():
    assert len(docs_examples()) >= 6


@pytest.mark.parametrize(("page", "number", "text"), docs_examples(), ids=lambda v: str(v)[:30])
def test_every_yaml_example_in_the_docs_loads_through_the_real_config_classes(page, number, text):
    example = yaml.safe_load(text)
    assert isinstance(example, dict) and example, f"{page} example {number} is not a mapping"
    # pasted over the base parameters, as a user would in conf/local/parameters.yml
    params = merged_parameters("base")

    def merge(into: dict, extra: dict) -> None:
        for key, value in extra.items():
            if isinstance(value, dict) and isinstance(into.get(key), dict):
                merge(into[key], value)
            else:
                into[key] = value

    merge(params, example)
    check_parameters(params)


def test_a_family_world_block_is_checked_like_the_shared_one():
    params = merged_parameters("base")
    params["story_continuation"]["data"]["scene_world"]["n_sequencs"] = 10
    with pytest.raises(ParameterError, match=r"'n_sequencs' \(did you mean 'n_sequences'\?\) in params:story_continuation\.data\.scene_world"):
        check_parameters(params)
    params["story_continuation"]["data"]["scene_world"].pop("n_sequencs")
    params["story_continuation"]["data"]["scene_world"]["enabled"] = False  # a switch, as for sources.*
    check_parameters(params)
