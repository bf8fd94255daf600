"""``story_gpt2``: train -> evaluate (with controls) -> report, on the story corpus."""
from kedro.pipeline import Pipeline, node

from .nodes import evaluate_story_model, report_story_model, train_story_model


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            node(
                train_story_model,
                [
                    "story.train_records",
                    "story.val_records",
                    "story.tokenizer",
                    "params:story_gpt2.model",
                    "params:story_gpt2.train",
                ],
                ["story_gpt2.model", "story_gpt2.training"],
                name="train_story_model",
            ),
            node(
                evaluate_story_model,
                ["story_gpt2.model", "story.val_records", "params:story_gpt2.evaluation"],
                [
                    "story_gpt2.evaluation",
                    "story_gpt2.metrics",
                    "story_gpt2.metrics_table",
                    "story_gpt2.samples",
                ],
                name="evaluate_story_model",
            ),
            node(
                report_story_model,
                ["story_gpt2.evaluation", "story_gpt2.training", "params:story_gpt2"],
                "story_gpt2.report",
                name="report_story_model",
            ),
        ],
        tags="story_gpt2",
    )
