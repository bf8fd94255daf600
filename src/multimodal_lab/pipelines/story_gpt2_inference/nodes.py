"""story_gpt2_inference: stories for a folder of the user's own images."""
from __future__ import annotations

import logging
from typing import Any

from multimodal_lab.config import from_params

log = logging.getLogger(__name__)


def tell_stories(model, params: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
    """Write a story for every image of a folder, with the trained story_gpt2 model.

    Args:
        model: the trained ``StoryGPT2`` (the newest version, or one pinned with
            ``--load-versions=story_gpt2.model:<version>``).
        params: ``params:story_gpt2_inference`` — ``images_dir``, ``batch_size`` and
            ``generation`` (fields of ``GenerationSettings``).

    Returns:
        One ``{"image": name, "story": text}`` per image (JSON) and an HTML page.
    """
    from multimodal_lab.inference import InferenceParams, StoryTeller, load_image_folder, render_stories_html

    config = from_params(InferenceParams, params, where="params:story_gpt2_inference")
    named = load_image_folder(config.images_dir)
    teller = StoryTeller(model, batch_size=config.batch_size)
    stories = teller.tell([image for _, image in named], config.generation)
    log.info("told %d stories for images in %s", len(stories), config.images_dir)
    items = [(name, image, story) for (name, image), story in zip(named, stories)]
    return [{"image": name, "story": story} for name, _, story in items], render_stories_html(items)
