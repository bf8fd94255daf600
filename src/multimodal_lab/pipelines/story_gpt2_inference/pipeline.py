"""``story_gpt2_inference``: a folder of images + the trained model -> stories (JSON + HTML)."""
from kedro.pipeline import Pipeline, node

from .nodes import tell_stories


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            node(
                tell_stories,
                ["story_gpt2.model", "params:story_gpt2_inference"],
                ["story_gpt2_inference.stories", "story_gpt2_inference.page"],
                name="tell_stories",
            )
        ],
        tags="story_gpt2",
    )
