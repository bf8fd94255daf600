"""A tiny StoryReasoning dataset with the real schema (imported by tests)."""
from __future__ import annotations

import datasets
from PIL import Image

FEATURES = datasets.Features({
    "story_id": datasets.Value("string"),
    "images": datasets.List(datasets.Image()),
    "frame_count": datasets.Value("int32"),
    "chain_of_thought": datasets.Value("string"),
    "story": datasets.Value("string"),
})


def frame_text(story: str, n: int) -> str:
    return (f'<gdi image{n + 1}>\n  In frame {n + 1} of {story}, <gdo char1>James</gdo> '
            f'<gda char1>walks</gda> past <gdo obj{n} bg2>a   table</gdo> near <gdl lm1>the tower</gdl>.\n</gdi>')


def make_story(story_id: str, frames: int, missing: tuple[int, ...] = ()) -> dict:
    return {
        "story_id": story_id,
        "images": [Image.new("RGB", (64, 48), (10 * i, 100, 200)) for i in range(frames)],
        "frame_count": frames,
        "chain_of_thought": "## Image 1\n### Characters\n| Character ID | Name |",
        "story": "\n".join(frame_text(story_id, i) for i in range(frames) if i not in missing),
    }


def _noise(seed: int) -> Image.Image:
    """A 64x48 picture of seeded noise: no two seeds give pictures that dedup would merge."""
    import numpy as np

    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (48, 64, 3), dtype=np.uint8))


def save_stories(folder, stories: dict[str, int]) -> str:
    """``stories`` (story id -> frame count) saved as a ``train`` split with ``save_to_disk``; returns the path.

    Every frame is its own noise picture, so ingest's dedup keeps them all.
    """
    rows = [{**make_story(story_id, frames), "images": [_noise(int(story_id) * 100 + i) for i in range(frames)]}
            for story_id, frames in stories.items()]
    train = datasets.Dataset.from_dict({key: [row[key] for row in rows] for key in FEATURES}, features=FEATURES)
    datasets.DatasetDict({"train": train}).save_to_disk(str(folder))
    return str(folder)
