"""``sources``: every configured source -> ``raw_records``."""
from kedro.pipeline import Pipeline, node

from .nodes import load_local_folder, load_scene_world, merge_sources


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
                merge_sources,
                ["scene_world_records", "local_folder_records"],
                "raw_records",
                name="merge_sources",
            ),
        ],
        tags="data_preparation",
    )
