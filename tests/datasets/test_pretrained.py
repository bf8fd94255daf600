from pathlib import Path

import pytest
from kedro.io.core import DatasetError, Version
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from multimodal_lab.datasets import PretrainedDirDataset


def _tokenizer(words):
    vocab = {w: i for i, w in enumerate(["<pad>", "<unk>", *words])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>")


def _dataset(tmp_path: Path, load=None, save=None) -> PretrainedDirDataset:
    return PretrainedDirDataset(
        filepath=str(tmp_path / "tok"),
        model_class="transformers.PreTrainedTokenizerFast",
        version=Version(load, save),
    )


def test_versions_are_separate_directories_and_latest_loads(tmp_path):
    _dataset(tmp_path, save="2026-01-01T00.00.00.000Z").save(_tokenizer(["red", "star"]))
    _dataset(tmp_path, save="2026-01-02T00.00.00.000Z").save(_tokenizer(["blue", "ring", "sea"]))
    assert (tmp_path / "tok" / "2026-01-01T00.00.00.000Z" / "tok" / "tokenizer.json").is_file()
    latest = _dataset(tmp_path).load()
    assert len(latest) == 5 and latest.convert_tokens_to_ids("ring") == 3
    pinned = _dataset(tmp_path, load="2026-01-01T00.00.00.000Z").load()
    assert len(pinned) == 4 and pinned.convert_tokens_to_ids("ring") == pinned.unk_token_id


def test_failed_save_leaves_no_version_behind(tmp_path):
    class Broken:
        def save_pretrained(self, path):
            Path(path).mkdir(parents=True)
            (Path(path) / "half.bin").write_bytes(b"x")
            raise RuntimeError("disk full")

    with pytest.raises(DatasetError, match="disk full"):
        _dataset(tmp_path, save="v1").save(Broken())
    assert not _dataset(tmp_path).exists()
    assert not any(p.name == "tok" for p in (tmp_path / "tok").rglob("tok") if p.is_dir() and p != tmp_path / "tok")


def test_clear_errors(tmp_path):
    with pytest.raises(DatasetError, match="has no save_pretrained"):
        _dataset(tmp_path, save="v1").save(object())
    bad = PretrainedDirDataset(filepath=str(tmp_path / "x"), model_class="nope.Missing")
    (tmp_path / "x").mkdir()
    with pytest.raises(DatasetError, match="cannot import model_class 'nope.Missing'"):
        bad.load()


def test_png_folder_dataset_versions_a_folder_of_images(tmp_path):
    from kedro.io.core import DatasetError, Version
    from PIL import Image

    from multimodal_lab.datasets import PNGFolderDataset

    red, blue = Image.new("RGB", (8, 8), (255, 0, 0)), Image.new("RGB", (4, 6), (0, 0, 255))
    first = PNGFolderDataset(filepath=str(tmp_path / "images"), version=Version(None, "2026-01-01T00.00.00.000Z"))
    first.save({"a.png": red, "b.png": blue})
    second = PNGFolderDataset(filepath=str(tmp_path / "images"), version=Version(None, "2026-01-02T00.00.00.000Z"))
    second.save({"a.png": blue})
    latest = PNGFolderDataset(filepath=str(tmp_path / "images"), version=Version(None, None)).load()
    assert list(latest) == ["a.png"] and latest["a.png"].size == (4, 6)  # the newest version, whole
    pinned = PNGFolderDataset(filepath=str(tmp_path / "images"), version=Version("2026-01-01T00.00.00.000Z", None))
    loaded = pinned.load()
    assert sorted(loaded) == ["a.png", "b.png"] and loaded["a.png"].getpixel((0, 0)) == (255, 0, 0)
    assert not list((tmp_path / "images").glob("*/.*tmp*"))  # nothing half-written left behind
    bad = PNGFolderDataset(filepath=str(tmp_path / "bad"), version=Version(None, "2026-01-03T00.00.00.000Z"))
    with pytest.raises(DatasetError, match="plain file name ending in .png"):
        bad.save({"../escape.png": red})
    with pytest.raises(DatasetError, match="expected a PIL image"):
        bad.save({"x.png": b"bytes"})
