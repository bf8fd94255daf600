"""``sources``: every configured source -> ``raw_records``."""
from kedro.pipeline import Pipeline, node

from .nodes import (
    load_coco,
    load_huggingface,
    load_local_folder,
    load_scene_world,
    load_story_reasoning,
    merge_sources,
    scrape_web,
)


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            node(
                load_scene_world,
                "params:sources.scene_world",
                "scene_world_records",
                name="load_scene_world",
            ),
            node(
                load_local_folder,
                "params:sources.local_folder",
                "local_folder_records",
                name="load_local_folder",
            ),
            node(
                scrape_web,
                "params:sources.web",
                ["web_records", "web_fetch_log"],
                name="scrape_web",
            ),
            node(
                load_huggingface,
                "params:sources.huggingface",
                "huggingface_records",
                name="load_huggingface",
            ),
            node(
                load_story_reasoning,
                "params:sources.story_reasoning",
                "story_reasoning_records",
                name="load_story_reasoning",
            ),
            node(
                load_coco,
                "params:sources.coco",
                "coco_records",
                name="load_coco",
            ),
            node(
                merge_sources,
                [
                    "scene_world_records",
                    "local_folder_records",
                    "web_records",
                    "huggingface_records",
                    "story_reasoning_records",
                    "coco_records",
                ],
                "raw_records",
                name="merge_sources",
            ),
        ],
        tags="data_preparation",
    )
