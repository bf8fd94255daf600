"""Try every model family in a browser: a Gradio app with one tab per family.

    multimodal-lab demo                       # or: python -m multimodal_lab demo
    multimodal-lab demo --model story_gpt2=data/06_models/story_gpt2/model/<version>/model --port 7861

Each tab serves the newest versioned model of its family under ``data/06_models`` (the one a
family's inference pipeline reads: ``<family>.model``, or ``<family>.<variant>.model`` for a
family with variants), or the directory given with ``--model family=path``. A family with no
trained model shows the command that trains it. The app listens on 127.0.0.1 unless told
otherwise. Gradio is an optional dependency: ``pip install -e ".[demo]"``.
"""
from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: The tabs, in order: family -> tab title.
TABS: dict[str, str] = {
    "story_gpt2": "Image -> story",
    "vit_captioner": "Image -> caption",
    "art_generator": "Seed -> engraving + caption",
    "story_continuation": "4 frames -> the 5th",
}
DEFAULT_MODELS_ROOT = Path("data/06_models")


def model_dataset(family: str) -> str:
    """The catalog name of the model a family's inference reads (see ``families.served_model_dataset``)."""
    from multimodal_lab.families import served_model_dataset

    return served_model_dataset(family)


def newest_model(family: str, root: str | os.PathLike = DEFAULT_MODELS_ROOT) -> Path | None:
    """The newest versioned model directory of ``family`` under ``root``, or None when none was trained.

    Versioned datasets live in ``<root>/<dataset folder>/<version>/model`` with versions named by
    their UTC timestamp, so the newest sorts last.
    """
    name = model_dataset(family)
    folder = Path(root) / name.removesuffix(".model") / "model"
    if not folder.is_dir():
        return None
    versions = sorted(p for p in folder.iterdir() if (p / "model" / "config.json").is_file())
    return versions[-1] / "model" if versions else None


def train_command(family: str) -> str:
    """The command that trains the model a tab needs."""
    return f"kedro run --pipelines={family}"


def parse_model_overrides(values: Sequence[str]) -> dict[str, Path]:
    """``["family=path", ...]`` -> {family: path}; refuses unknown families, missing folders and repeats."""
    out: dict[str, Path] = {}
    for value in values:
        family, sep, path = value.partition("=")
        if not sep or not family or not path:
            raise ValueError(f"--model takes family=path, got {value!r}")
        if family not in TABS:
            raise ValueError(f"--model: unknown family {family!r}; the demo's families are {list(TABS)}")
        if family in out:
            raise ValueError(f"--model gives {family} twice")
        if not (Path(path) / "config.json").is_file():
            raise ValueError(f"--model {family}={path}: no saved model there (no config.json)")
        out[family] = Path(path)
    return out


@dataclass
class Served:
    """What a tab serves: the model's directory and its inference API, or why there is none."""

    family: str
    directory: Path | None
    api: Any = None
    problem: str | None = None
    label: str = ""  # how the tab names the model: its path under the models root, or as given

    @property
    def ready(self) -> bool:
        return self.api is not None


def load_models(root: str | os.PathLike = DEFAULT_MODELS_ROOT,
                overrides: Mapping[str, str | os.PathLike] | None = None) -> dict[str, Served]:
    """Each tab's model: the override, else the newest under ``root``; a model that fails to load is
    reported on its tab, not raised."""
    from multimodal_lab.inference import load

    served = {}
    for family in TABS:
        directory = Path(overrides[family]) if overrides and family in overrides else newest_model(family, root)
        if directory is None:
            served[family] = Served(family, None, problem=f"No trained {family} model under {root} yet.")
            continue
        try:
            label = str(directory)
            if not (overrides and family in overrides):
                label = f"{model_dataset(family)} version {directory.parent.name}"
            served[family] = Served(family, directory, load(directory, device="cpu"), label=label)
        except Exception as error:  # noqa: BLE001 - shown on the tab instead of stopping the app
            log.warning("%s: could not load %s: %s", family, directory, error)
            served[family] = Served(family, directory, problem=f"Could not load {directory}: {error}")
    return served


# ----------------------------------------------------------------------------- what each tab does

def tell_story(api, image, strategy: str = "greedy", temperature: float = 1.0, top_p: float = 1.0,
               max_new_tokens: int = 64, seed: int = 0) -> str:
    """Image -> story with the decoding settings of the tab."""
    from multimodal_lab.generation.story import GenerationSettings

    if image is None:
        return "Upload an image first."
    settings = GenerationSettings(strategy=strategy, temperature=float(temperature), top_p=float(top_p),
                                  max_new_tokens=int(max_new_tokens), seed=int(seed))
    return api.tell(image, settings)[0]


def write_caption(api, image, num_beams: int = 5):
    """Image -> (caption, where each word looked as a PIL strip or None)."""
    import io

    from PIL import Image

    from multimodal_lab.reporting.figures import attention_strip_png

    if image is None:
        return "Upload an image first.", None
    captions, maps = api.caption(image, num_beams=int(num_beams), return_attention=True)
    overlay = None
    if maps and maps[0]["words"]:
        overlay = Image.open(io.BytesIO(attention_strip_png(image, maps[0]["words"], maps[0]["maps"])))
    return captions[0], overlay


def draw_engraving(api, seed):
    """Seed -> (engraving as a PIL image, caption, the layout drawn as text)."""
    if seed is None or int(seed) < 0:
        return None, "The seed must be an integer >= 0.", ""
    image, caption, metadata = api.generate(int(seed))
    objects = ", ".join(f"{o['size']} {o['shape']} at ({o['x']:.2f}, {o['y']:.2f})" for o in metadata.get("objects", []))
    layout = f"backdrop: {metadata['backdrop']}; objects: {objects}" if "backdrop" in metadata else metadata["design"]
    return image.resize((256, 256), resample=0), caption, layout


def continue_frames(api, frame1, frame2, frame3, frame4, sentence1: str, sentence2: str, sentence3: str,
                    sentence4: str):
    """4 frames + 4 sentences -> (the 5th frame, the 5th sentence)."""
    frames = [frame1, frame2, frame3, frame4]
    sentences = [sentence1, sentence2, sentence3, sentence4]
    if any(f is None for f in frames):
        return None, "Give all 4 frames (or pick an example below)."
    if any(not (s or "").strip() for s in sentences):
        return None, "Give all 4 sentences (or pick an example below)."
    result = api.continue_story(frames, sentences)
    image = result["image"].resize((256, 256), resample=0) if result["image"] is not None else None
    return image, result["sentence"]


def continuation_examples(root: str | os.PathLike, out: str | os.PathLike, count: int = 4) -> list[list]:
    """Sequences of story_continuation's newest test split, written as PNG files under ``out``:
    one example row per sequence (4 frame paths, 4 sentences). [] when the split was not prepared."""
    import io

    import pandas as pd
    from PIL import Image

    folder = Path(root).parent / "05_model_input" / "story_continuation_data.sequence" / "test_records.parquet"
    versions = sorted(folder.iterdir()) if folder.is_dir() else []
    if not versions:
        return []
    records = pd.read_parquet(versions[-1] / "test_records.parquet")
    rows = []
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for group, frames in records.groupby("group_id", sort=True):
        frames = frames.sort_values("frame_index")
        if frames["frame_index"].tolist()[:5] != list(range(5)):
            continue
        paths = []
        for index, record in enumerate(frames.head(4).itertuples()):
            path = out / f"{group}_{index}.png"
            Image.open(io.BytesIO(record.image)).convert("RGB").save(path)
            paths.append(str(path))
        rows.append([*paths, *frames.head(4)["caption"].astype(str).tolist()])
        if len(rows) == count:
            break
    return rows


# ----------------------------------------------------------------------------- the app

def build_app(served: Mapping[str, Served], examples_dir: str | os.PathLike | None = None,
              models_root: str | os.PathLike = DEFAULT_MODELS_ROOT):
    """The Gradio Blocks app: one tab per family (a missing model: how to train it)."""
    import gradio as gr

    with gr.Blocks(title="multimodal_lab", analytics_enabled=False) as app:  # no calls home
        gr.Markdown("# multimodal_lab\nEvery model family, served from its newest trained version.")
        for family, title in TABS.items():
            entry = served[family]
            with gr.Tab(title, id=family):
                if not entry.ready:
                    gr.Markdown(f"{entry.problem}\n\nTrain it with:\n\n```bash\n{train_command(family)}\n```\n\n"
                                "then restart the demo.", elem_id=f"{family}-missing")
                    continue
                gr.Markdown(f"Model: `{entry.label or entry.directory}`", elem_id=f"{family}-model")
                _TAB_BUILDERS[family](gr, entry.api, family, examples_dir, models_root)
    return app


def _story_tab(gr, api, family, examples_dir, models_root) -> None:
    with gr.Row():
        image = gr.Image(type="pil", label="Your image", elem_id=f"{family}-image")
        with gr.Column():
            strategy = gr.Dropdown(["greedy", "beam", "sample"], value="greedy", label="Decoding")
            temperature = gr.Slider(0.1, 2.0, value=1.0, step=0.1, label="Temperature (sample)")
            top_p = gr.Slider(0.1, 1.0, value=1.0, step=0.05, label="Top-p (sample)")
            tokens = gr.Slider(8, 128, value=64, step=1, label="Longest story (tokens)")
            seed = gr.Number(value=0, precision=0, label="Sampling seed")
    button = gr.Button("Tell a story", elem_id=f"{family}-run")
    story = gr.Textbox(label="Story", lines=5, elem_id=f"{family}-output")
    button.click(lambda *a: tell_story(api, *a), [image, strategy, temperature, top_p, tokens, seed], story)


def _caption_tab(gr, api, family, examples_dir, models_root) -> None:
    with gr.Row():
        image = gr.Image(type="pil", label="Your image", elem_id=f"{family}-image")
        beams = gr.Slider(1, 8, value=5, step=1, label="Beam size (1 = greedy)")
    button = gr.Button("Caption it", elem_id=f"{family}-run")
    caption = gr.Textbox(label="Caption", elem_id=f"{family}-output")
    overlay = gr.Image(type="pil", format="png", label="Where each word looked", elem_id=f"{family}-overlay")
    button.click(lambda *a: write_caption(api, *a), [image, beams], [caption, overlay])


def _art_tab(gr, api, family, examples_dir, models_root) -> None:
    with gr.Row():
        seed = gr.Number(value=0, precision=0, minimum=0, label="Seed", elem_id=f"{family}-seed")
        button = gr.Button("Draw", elem_id=f"{family}-run")
        following = gr.Button("Next seed", elem_id=f"{family}-next")
    with gr.Row():
        image = gr.Image(type="pil", format="png", label="Engraving", elem_id=f"{family}-image")
        with gr.Column():
            caption = gr.Textbox(label="Caption", elem_id=f"{family}-output")
            layout = gr.Textbox(label="What the seed drew", elem_id=f"{family}-layout")
    button.click(lambda s: draw_engraving(api, s), seed, [image, caption, layout])
    seed.submit(lambda s: draw_engraving(api, s), seed, [image, caption, layout])  # Enter in the box draws too
    following.click(lambda s: int(s or 0) + 1, seed, seed).then(lambda s: draw_engraving(api, s), seed,
                                                                  [image, caption, layout])


def _continuation_tab(gr, api, family, examples_dir, models_root) -> None:
    with gr.Row():
        frames = [gr.Image(type="pil", label=f"Frame {i + 1}", elem_id=f"{family}-frame{i + 1}") for i in range(4)]
    sentences = [gr.Textbox(label=f"Sentence {i + 1}", elem_id=f"{family}-sentence{i + 1}") for i in range(4)]
    button = gr.Button("Continue", elem_id=f"{family}-run")
    with gr.Row():
        fifth = gr.Image(type="pil", format="png", label="The 5th frame", elem_id=f"{family}-image")
        sentence = gr.Textbox(label="The 5th sentence", elem_id=f"{family}-output")
    button.click(lambda *a: continue_frames(api, *a), [*frames, *sentences], [fifth, sentence])
    rows = continuation_examples(models_root, Path(examples_dir) / family) if examples_dir else []
    if rows:
        gr.Examples(rows, [*frames, *sentences], label="Sequences from the test split (click one)",
                    elem_id=f"{family}-examples")


_TAB_BUILDERS = {"story_gpt2": _story_tab, "vit_captioner": _caption_tab, "art_generator": _art_tab,
                 "story_continuation": _continuation_tab}


def main(argv: Sequence[str] | None = None) -> int:
    """``multimodal-lab demo [--host H] [--port P] [--model family=path ...] [--models-root DIR]``."""
    import tempfile

    parser = argparse.ArgumentParser(prog="multimodal-lab demo", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--model", action="append", default=[], metavar="FAMILY=PATH",
                        help="serve this model directory for a family (repeatable)")
    parser.add_argument("--models-root", default=str(DEFAULT_MODELS_ROOT),
                        help="where the versioned models are (default: data/06_models of this project)")
    args = parser.parse_args(argv)
    try:
        import gradio  # noqa: F401
    except ImportError:
        parser.exit(2, 'the demo needs Gradio: pip install -e ".[demo]"\n')
    try:
        overrides = parse_model_overrides(args.model)
    except ValueError as error:
        parser.exit(2, f"{error}\n")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    served = load_models(args.models_root, overrides)
    for family, entry in served.items():
        log.info("%s: %s", family, entry.directory if entry.ready else f"{entry.problem} ({train_command(family)})")
    with tempfile.TemporaryDirectory(prefix="multimodal_lab_demo_") as examples:
        app = build_app(served, examples, args.models_root)
        app.launch(server_name=args.host, server_port=args.port, allowed_paths=[examples])
    return 0
