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
from multimodal_lab.data.images import ImageInput, ImagePolicy, normalize_image
from multimodal_lab.data.records import make_record, records_frame
from multimodal_lab.families.story_gpt2 import training_data
from multimodal_lab.inference import StoryTeller, load_image_folder, render_stories_html
from multimodal_lab.models.preprocess import images_to_tensor
from multimodal_lab.models.story_gpt2 import StoryGPT2, StoryGPT2Config

RED_STORY = "a red circle sat by the calm sea."
BLUE_STORY = "a blue star shone over the dark hill."
SETTINGS = GenerationSettings(max_new_tokens=12)
INPUT = ImageInput(size=16, mode="pad", resample="bicubic")


def _solid(colour, size=16) -> torch.Tensor:
    return torch.tensor(colour, dtype=torch.float32).div(255).view(3, 1, 1).expand(3, size, size)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny model trained to tell the red story for red images and the blue one for blue, saved."""
    tokenizer = train_tokenizer([RED_STORY, BLUE_STORY], VocabConfig(kind="word", min_frequency=1))
    torch.manual_seed(0)
    config = StoryGPT2Config(encoder={"name": "cnn", "channels": [8], "blocks_per_stage": 0, "grid": 2},
                             image_size=16, image_input=INPUT.to_dict(), prefix_tokens=4, mapper_hidden=0,
                             n_layer=1, n_head=2, n_embd=32, n_positions=48, max_story_tokens=24)
    model = StoryGPT2(config, tokenizer)
    reds = [(255, 0, 0), (230, 20, 30), (200, 0, 0), (255, 60, 40)]
    blues = [(0, 0, 255), (30, 20, 230), (0, 0, 200), (40, 60, 255)]
    images = torch.stack([_solid(c) for c in reds + blues])
    ids = torch.tensor(encode_texts([RED_STORY] * 4 + [BLUE_STORY] * 4, tokenizer, 24))
    labels = ids.clone()
    labels[:, 0] = -100
    mask = torch.ones_like(ids)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(80):
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


def test_the_model_reads_the_image(teller):
    red, blue = Image.new("RGB", (16, 16), (255, 0, 0)), Image.new("RGB", (16, 16), (0, 0, 255))
    assert teller.tell([red, blue], SETTINGS) == [RED_STORY, BLUE_STORY]
    assert teller.tell(blue, SETTINGS) == [BLUE_STORY]  # a single image is fine too


def test_tell_rgba_300x17_and_palette_images(teller):
    rgba = Image.new("RGBA", (300, 17), (0, 0, 255, 255))
    stories = teller.tell([rgba, _palette_image()], SETTINGS)
    assert stories[0] == BLUE_STORY and stories[1] in (RED_STORY, BLUE_STORY)


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
    assert teller.tell(image, SETTINGS)[0] in (RED_STORY, BLUE_STORY)


def test_tell_batches_keep_order_and_count(teller):
    colours = [(255, 0, 0), (0, 0, 255), (0, 0, 255), (255, 0, 0), (0, 0, 255), (255, 0, 0), (255, 0, 0)]
    images = [Image.new("RGB", (16 + i, 16 + 2 * i), c) for i, c in enumerate(colours)]  # batch 3 -> 3 chunks
    expected = [RED_STORY if c[0] else BLUE_STORY for c in colours]
    assert teller.tell(images, SETTINGS) == expected
    assert teller.tell(images[::-1], SETTINGS) == expected[::-1]


def test_inference_makes_the_same_input_as_ingest_and_the_training_dataset(teller):
    """A non-square photo: inference on the file == ingest (pad, bicubic, PNG) + the dataset's tensor."""
    rng = np.random.default_rng(3)
    photo = Image.fromarray(rng.integers(0, 255, (37, 90, 3), dtype=np.uint8))
    buffer = io.BytesIO()
    photo.save(buffer, format="JPEG", quality=90)
    jpeg = buffer.getvalue()
    policy = ImagePolicy(size=(16, 16), mode="pad", resample="bicubic", min_side=8)
    assert ImageInput.from_policy(policy) == teller.model.image_input
    record = make_record(image=normalize_image(jpeg, policy).data, source="t", corpus="scene", story=RED_STORY)
    dataset, _ = training_data(teller.model, records_frame([record]))
    via_ingest = dataset.image_tensor([0])
    via_inference = images_to_tensor([Image.open(io.BytesIO(jpeg))], teller.model.image_input)
    assert via_inference.shape == (1, 3, 16, 16)
    assert torch.equal(via_inference, via_ingest)
    # the pad fill is the policy's white background, not a stretch of the photo
    assert torch.equal(via_inference[0, :, 0, 0], torch.ones(3))


def test_tell_rejects_non_images(teller):
    with pytest.raises(TypeError, match=r"images\[1\] is a ndarray"):
        teller.tell([Image.new("RGB", (4, 4)), np.zeros((4, 4, 3))])


def test_from_pretrained_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="save_pretrained"):
        StoryTeller.from_pretrained(tmp_path / "nope")


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
    big = tmp_path / "limits"
    big.mkdir()
    _save(big / "wide.png", Image.new("RGB", (300, 200), (1, 2, 3)))
    with pytest.warns(UserWarning, match="above max_pixels 50000"), pytest.raises(ValueError, match="1 file"):
        load_image_folder(big, max_pixels=50_000)
    with pytest.warns(UserWarning, match="above max_bytes 100"), pytest.raises(ValueError, match="1 file"):
        load_image_folder(big, max_bytes=100)
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
