"""story_continuation's own data chain with StoryReasoning switched on (the gpu environment's corpus)."""
from __future__ import annotations

import json

import pandas as pd
import pytest
from project_copy import only_version, project_runs
from story_reasoning_fixtures import save_stories

SOURCE = "huggingface"  # StoryReasoning's records name the hub they come from
STORIES = {"201": 10, "202": 10, "203": 5, "204": 15, "205": 10, "206": 5}  # 11 windows of 5 frames


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    root = tmp_path_factory.mktemp("story_reasoning_chain")
    path = save_stories(root / "stories", STORIES)
    with project_runs(root) as project:
        from kedro.framework.session import KedroSession

        # StoryReasoning is CC BY-ND 4.0, which the default allow-list rejects: a user allows it explicitly
        allow = ["CC0-1.0", "PDM-1.0", "CC-BY-4.0", "CC-BY-SA-4.0", "CC-BY-ND-4.0"]
        runtime = {"story_continuation": {"data": {"story_reasoning": {"enabled": True, "path": path}}},
                   "ingest": {"license_allow": allow}}
        with KedroSession.create(project_path=project, env="test", runtime_params=runtime) as session:
            session.run(pipeline_names=["story_continuation"],
                        to_nodes=["story_continuation_data.sequence.build_tokenizer"])
        yield project / "data"


def _records(data, name: str) -> pd.DataFrame:
    return pd.read_parquet(only_version(data / f"05_model_input/story_continuation_data.sequence/{name}.parquet"))


def test_story_reasoning_windows_join_the_scene_world_sequences(chain):
    raw = pd.read_parquet(only_version(chain / "01_raw/story_continuation_data/raw_records.parquet"))
    assert set(raw["source"]) == {"scene_world", SOURCE}
    assert (raw["source"] == SOURCE).sum() == sum(STORIES.values())  # every frame is one record
    splits = {name: _records(chain, f"{name}_records") for name in ("train", "val", "test")}
    windows = pd.concat(splits.values())
    windows = windows[windows["source"] == SOURCE]
    assert windows["group_id"].nunique() == 11 and (windows.groupby("group_id").size() == 5).all()
    # the windows of one story never straddle two splits
    story_split = {(name, story) for name, frame in splits.items()
                   for story in frame.loc[frame["source"] == SOURCE, "family_id"]}
    assert len({story for _, story in story_split}) == len(story_split) == len(STORIES)


def test_its_frame_texts_reach_the_tokenizer(chain):
    vocab = json.loads((only_version(chain / "04_feature/story_continuation_data.sequence/tokenizer")
                        / "tokenizer.json").read_text())["model"]["vocab"]
    train = _records(chain, "train_records")
    assert (train["source"] == SOURCE).any()
    assert "james" in vocab  # a word only StoryReasoning's frames use (the word vocabulary is lowercase)
