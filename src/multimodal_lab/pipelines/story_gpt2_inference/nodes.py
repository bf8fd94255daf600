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
    from multimodal_lab.generation.story import GenerationSettings
    from multimodal_lab.inference import StoryTeller, load_image_folder, render_stories_html

    params = dict(params or {})
    known = {"images_dir", "batch_size", "generation"}
    unknown = sorted(set(params) - known)
    if unknown:
        raise ValueError(f"unknown parameter(s) {unknown} in params:story_gpt2_inference; known keys: {sorted(known)}")
    if not params.get("images_dir"):
        raise ValueError("params:story_gpt2_inference.images_dir must name a folder of images")
    settings = from_params(
        GenerationSettings, params.get("generation"), where="params:story_gpt2_inference.generation"
    )
    named = load_image_folder(params["images_dir"])
    teller = StoryTeller(model, batch_size=int(params.get("batch_size", 16)))
    stories = teller.tell([image for _, image in named], settings)
    log.info("told %d stories for images in %s", len(stories), params["images_dir"])
    items = [(name, image, story) for (name, image), story in zip(named, stories)]
    return [{"image": name, "story": story} for name, _, story in items], render_stories_html(items)
