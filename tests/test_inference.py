import base64
import io
import re

import numpy as np
import pytest
import torch
from PIL import Image

from multimodal_lab.data.record_dataset import encode_texts
from multimodal_lab.data.vocab import VocabConfig, train_tokenizer
from multimodal_lab.generation.story import GenerationSettings
from multimodal_lab.inference import StoryTeller, load_image_folder, prepare_image, render_stories_html
from multimodal_lab.models.preprocess import images_to_tensor
from multimodal_lab.models.story_gpt2 import StoryGPT2, StoryGPT2Config

STORY = "a red circle sat by the calm sea."
SETTINGS = GenerationSettings(max_new_tokens=12)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny model trained to tell one story whatever the image, saved to disk."""
    tokenizer = train_tokenizer([STORY, "a blue star."], VocabConfig(kind="word", min_frequency=1))
    torch.manual_seed(0)
    config = StoryGPT2Config(encoder={"name": "cnn", "channels": [8], "blocks_per_stage": 0, "grid": 2}, image_size=16,
                             prefix_tokens=4, mapper_hidden=0, n_layer=1, n_head=2, n_embd=32,
                             n_positions=48, max_story_tokens=24)
    model = StoryGPT2(config, tokenizer)
    ids = torch.tensor(encode_texts([STORY] * 4, tokenizer, 24))
    labels = ids.clone()
    labels[:, 0] = -100
    mask = torch.ones_like(ids)
    images = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(40):
        optimizer.zero_grad()
        model(images, ids, mask, labels).loss.backward()
        optimizer.step()
    directory = tmp_path_factory.mktemp("model") / "story_model"
    model.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def teller(model_dir):
    return StoryTeller.from_pretrained(model_dir, device="cpu", batch_size=3)


def _palette_image() -> Image.Image:
    image = Image.new("P", (40, 25), 1)
    image.putpalette([0, 0, 0, 255, 0, 0, 0, 0, 255] + [0] * 759)
    image.paste(2, (0, 0, 10, 10))
    image.info["transparency"] = 0
    return image


def test_tell_rgba_300x17_and_palette_images(teller):
    rgba = Image.new("RGBA", (300, 17), (255, 0, 0, 128))
    stories = teller.tell([rgba, _palette_image()], SETTINGS)
    assert stories == [STORY, STORY]
    assert teller.tell(rgba, SETTINGS) == [STORY]  # a single image is fine too


@pytest.mark.parametrize(
    "image",
    [
        Image.new("L", (50, 70), 30),
        Image.new("1", (9, 9), 1),
        Image.new("CMYK", (64, 64), (0, 200, 200, 0)),
        Image.new("I;16", (20, 20), 40000),
        Image.new("F", (20, 20), 0.5),
        Image.new("LA", (33, 12), (90, 10)),
        Image.new("RGB", (1, 1), (0, 255, 0)),
        Image.new("RGB", (6000, 4000), (10, 200, 30)),
    ],
    ids=["L", "1", "CMYK", "I16", "F", "LA", "1x1", "6000x4000"],
)
def test_tell_any_mode_and_size(teller, image):
    assert teller.tell(image, SETTINGS) == [STORY]


def test_tell_batches_keep_order_and_count(teller):
    images = [Image.new("RGB", (16 + i, 16), (i * 20, 0, 0)) for i in range(7)]  # batch_size 3 -> 3 chunks
    stories = teller.tell(images, SETTINGS)
    assert len(stories) == 7 and all(s == STORY for s in stories)


def test_tell_rejects_non_images(teller):
    with pytest.raises(TypeError, match=r"images\[1\] is a ndarray"):
        teller.tell([Image.new("RGB", (4, 4)), np.zeros((4, 4, 3))])


def test_from_pretrained_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="save_pretrained"):
        StoryTeller.from_pretrained(tmp_path / "nope")


def test_prepare_image_flattens_on_white_and_shrinks_cheaply():
    rgba = Image.new("RGBA", (300, 17), (255, 0, 0, 0))
    out = prepare_image(rgba, 16)
    assert out.mode == "RGB" and out.getpixel((0, 0)) == (255, 255, 255)
    assert out.size == (34, 17)  # x reduced by 300 // 32 = 9 (rounding up), y untouched
    palette = prepare_image(_palette_image(), 16)
    assert palette.getpixel((0, 0)) == (0, 0, 255) and palette.getpixel((30, 20)) == (255, 0, 0)
    big = prepare_image(Image.new("RGB", (6400, 3200), (1, 2, 3)), 64)
    assert big.size == (128, 128) and big.getpixel((5, 5)) == (1, 2, 3)
    with pytest.raises(TypeError, match="PIL"):
        prepare_image(b"bytes", 16)


def test_prepare_image_matches_training_preprocessing():
    rng = np.random.default_rng(0)
    small = Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8))
    expected = images_to_tensor([small], 16)
    assert torch.equal(images_to_tensor([prepare_image(small, 16)], 16), expected)
    # a large smooth image: the cheap reduction changes almost nothing after resizing
    ramp = np.linspace(0, 255, 2000, dtype=np.float32)
    large = Image.fromarray(np.stack([np.tile(ramp, (1000, 1))] * 3, axis=-1).astype(np.uint8))
    direct = images_to_tensor([large], 16)
    reduced = images_to_tensor([prepare_image(large, 16)], 16)
    assert (direct - reduced).abs().max().item() < 0.03


def _save(path, image, fmt="PNG", **kwargs):
    image.save(path, format=fmt, **kwargs)


def test_load_image_folder_reads_sorted_images_and_warns_on_bad_files(tmp_path):
    _save(tmp_path / "b.png", Image.new("RGBA", (5, 4), (0, 0, 0, 0)))
    _save(tmp_path / "a.jpg", Image.new("RGB", (8, 8), (255, 0, 0)), "JPEG")
    (tmp_path / "notes.txt").write_text("not an image")
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (1, 2, 3)).save(buffer, format="PNG")
    (tmp_path / "broken.png").write_bytes(buffer.getvalue()[:60])
    (tmp_path / ".DS_Store").write_bytes(b"\x00\x01")
    (tmp_path / "sub").mkdir()
    with pytest.warns(UserWarning, match="skipped 2 unreadable") as record:
        items = load_image_folder(tmp_path)
    message = str(record[0].message)
    assert "notes.txt" in message and "broken.png" in message and ".DS_Store" not in message
    assert [name for name, _ in items] == ["a.jpg", "b.png"]
    assert items[1][1].mode == "RGBA" and items[1][1].size == (5, 4)


def test_load_image_folder_applies_exif_orientation(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when shown
    _save(tmp_path / "photo.jpg", Image.new("RGB", (40, 10), (0, 0, 255)), "JPEG", exif=exif.tobytes())
    [(name, image)] = load_image_folder(tmp_path)
    assert name == "photo.jpg" and image.size == (10, 40)


def test_load_image_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_image_folder(tmp_path / "missing")
    (tmp_path / "file.png").write_bytes(b"x")
    with pytest.raises(NotADirectoryError, match="not a folder"):
        load_image_folder(tmp_path / "file.png")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no readable images.*empty"):
        load_image_folder(empty)
    with pytest.warns(UserWarning, match="file.png"), pytest.raises(ValueError, match="1 file"):
        load_image_folder(tmp_path)


def test_render_stories_html_embeds_images_and_escapes(tmp_path):
    buffer = io.BytesIO()
    Image.new("RGB", (10, 10), (9, 9, 9)).save(buffer, format="PNG")
    html = render_stories_html(
        [("one.png", Image.new("RGBA", (600, 30), (0, 0, 0, 0)), "<script>alert(1)</script> & more"),
         {"name": "two <b>.png", "image": buffer.getvalue(), "story": "a blue star."}],
        title="My stories",
    )
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt; &amp; more" in html
    assert "two &lt;b&gt;.png" in html and "a blue star." in html and "<title>My stories</title>" in html
    uris = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(uris) == 2
    first = Image.open(io.BytesIO(base64.b64decode(uris[0])))
    assert first.size == (320, 16) and first.getpixel((0, 0)) == (255, 255, 255)
