"""BLIP-2 captioning with a tiny BLIP-2 and processor built locally, saved, and loaded back."""
from __future__ import annotations

import io
import json

import pandas as pd
import pytest
import torch
from PIL import Image

from multimodal_lab.captioning import blip2
from multimodal_lab.captioning.blip2 import (
    Blip2Config,
    Blip2ModelNotFoundError,
    caption_records,
    resolve_dtype,
)
from multimodal_lab.captioning.cache import cache_from_frame, cache_to_frame, image_sha256
from multimodal_lab.data.records import make_record, records_frame

WORDS = "a photo of red green blue square on white wall the cat dog sits next to".split()


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    """A BLIP-2 with 32-wide, 1-layer parts, an OPT decoder and a word-level tokenizer."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import Blip2ForConditionalGeneration, Blip2Processor, BlipImageProcessor, \
        PreTrainedTokenizerFast
    from transformers import Blip2Config as HFBlip2Config

    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    vocab = {token: i for i, token in enumerate(specials + WORDS)}
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>", unk_token="<unk>")
    # Blip2Processor adds the "<image>" token; the model must use the same id
    processor = Blip2Processor(image_processor=BlipImageProcessor(size={"height": 16, "width": 16}),
                               tokenizer=fast, num_query_tokens=4)
    config = HFBlip2Config(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=16, patch_size=8),
        qformer_config=dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                            encoder_hidden_size=32, vocab_size=len(fast)),
        # untied head: a 1-layer decoder with tied embeddings just repeats its last token
        text_config=dict(model_type="opt", vocab_size=len(fast), hidden_size=32, num_hidden_layers=1, ffn_dim=64,
                         num_attention_heads=2, max_position_embeddings=64, word_embed_proj_dim=32,
                         bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=False),
        num_query_tokens=4,
        image_token_index=fast.convert_tokens_to_ids("<image>"),
    )
    torch.manual_seed(0)
    model = Blip2ForConditionalGeneration(config).eval()
    folder = tmp_path_factory.mktemp("tiny_blip2")
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return str(folder)


def reference_caption(model_dir: str, color, dtype=torch.float32, max_new_tokens: int = 6) -> str:
    """What the saved model says about one solid-colour image, asked directly through transformers."""
    from transformers import Blip2ForConditionalGeneration, Blip2Processor

    processor = Blip2Processor.from_pretrained(model_dir)
    model = Blip2ForConditionalGeneration.from_pretrained(model_dir, dtype=dtype).eval()
    inputs = processor(images=[Image.open(io.BytesIO(png(color))).convert("RGB")], text=[""], return_tensors="pt")
    inputs["pixel_values"] = inputs["pixel_values"].to(next(model.vision_model.parameters()).dtype)
    with torch.inference_mode():
        output = model.generate(**inputs, max_new_tokens=max_new_tokens, num_beams=1, do_sample=False)
    new = output[0, inputs["input_ids"].shape[1]:]
    return " ".join(processor.decode(new, skip_special_tokens=True).split())


def png(color) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (20, 20), color).save(buffer, format="PNG")
    return buffer.getvalue()


COLORS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255), (40, 40, 40)]


@pytest.fixture
def records() -> pd.DataFrame:
    rows = [make_record(image=png(c), source="web", corpus="web", metadata={"page_url": f"p{i}"})
            for i, c in enumerate(COLORS)]
    rows.append(make_record(image=png(COLORS[0]), source="web", corpus="web", url="duplicate image"))
    rows.append(make_record(image=png((9, 9, 9)), source="scene_world", corpus="scene", caption="a given caption"))
    rows.append(make_record(image=png((1, 2, 3)), source="web", corpus="web", caption="   "))
    return records_frame(rows)


@pytest.fixture
def load_counter(monkeypatch):
    """Counts how often the model is loaded, without changing what loading does."""
    calls = []
    real = blip2.load_blip2

    def counting(config):
        calls.append(config.model)
        return real(config)

    monkeypatch.setattr(blip2, "load_blip2", counting)
    return calls


def config_for(model_dir: str, **overrides) -> Blip2Config:
    return Blip2Config(**{"model": model_dir, "batch_size": 3, "max_new_tokens": 6, "progress": False} | overrides)


def test_captions_missing_ones_and_records_provenance(tiny_model_dir, records, load_counter):
    snapshot = records.copy(deep=True)
    out, cache = caption_records(records, config_for(tiny_model_dir))
    pd.testing.assert_frame_equal(records, snapshot)  # input untouched
    assert load_counter == [tiny_model_dir]
    captions = out["caption"].tolist()
    assert captions[6] == "a given caption"  # had one: kept
    filled = [captions[i] for i in (0, 1, 2, 3, 4, 5, 7)]
    # each caption is what the saved model says about that image on its own
    assert filled[:5] == [reference_caption(tiny_model_dir, c) for c in COLORS]
    assert filled[6] == reference_caption(tiny_model_dir, (1, 2, 3))
    assert len(set(filled[:5])) >= 2  # different images, not one constant answer
    assert captions[5] == captions[0]  # same image bytes, same caption
    assert len(cache) == 6  # 5 colours + the blank-caption image; the duplicate shares an entry
    key = image_sha256(records["image"].iat[1])
    assert cache[key] == {"caption": captions[1], "model": tiny_model_dir,
                          "settings": {"prompt": None, "max_new_tokens": 6, "num_beams": 1}}
    meta = json.loads(out["metadata"].iat[1])
    assert meta["page_url"] == "p1"
    assert meta["caption_source"] == {"model": tiny_model_dir, "settings": cache[key]["settings"],
                                      "image_sha256": key}
    assert "caption_source" not in json.loads(out["metadata"].iat[6])
    assert out["record_id"].tolist() == records["record_id"].tolist()


def test_batched_equals_one_by_one(tiny_model_dir, records):
    batched, _ = caption_records(records, config_for(tiny_model_dir, batch_size=4))
    single, _ = caption_records(records, config_for(tiny_model_dir, batch_size=1))
    assert batched["caption"].tolist() == single["caption"].tolist()


def test_rerun_hits_the_cache_and_does_not_load_the_model(tiny_model_dir, records, load_counter):
    config = config_for(tiny_model_dir)
    first, cache = caption_records(records, config)
    assert len(load_counter) == 1
    again, cache_again = caption_records(records, config, cache)
    assert len(load_counter) == 1
    pd.testing.assert_frame_equal(again, first)
    assert cache_again == cache
    # the frame form persists the same cache
    from_frame, _ = caption_records(records, config, cache_to_frame(cache))
    assert len(load_counter) == 1
    assert from_frame["caption"].tolist() == first["caption"].tolist()
    assert cache_from_frame(cache_to_frame(cache)) == cache
    # other generation settings are another caption: the model is loaded again
    caption_records(records, config_for(tiny_model_dir, max_new_tokens=3), cache)
    assert len(load_counter) == 2


def test_overwrite_recaptions_existing_captions(tiny_model_dir, records):
    out, _ = caption_records(records, config_for(tiny_model_dir, overwrite=True, prompt="a photo of"))
    assert out["caption"].iat[6] != "a given caption"
    assert json.loads(out["metadata"].iat[6])["caption_source"]["settings"]["prompt"] == "a photo of"


def test_nothing_to_caption_never_loads_the_model(tmp_path, load_counter):
    rows = records_frame([make_record(image=png(c), source="scene_world", corpus="scene", caption=f"c{i}")
                          for i, c in enumerate(COLORS)])
    out, cache = caption_records(rows, Blip2Config(model=str(tmp_path / "no_model_here")), {"k": {"x": 1}})
    assert load_counter == [] and cache == {"k": {"x": 1}}
    pd.testing.assert_frame_equal(out, rows)


def test_missing_model_gives_a_clear_error(tmp_path, records):
    missing = str(tmp_path / "not_a_model")
    with pytest.raises(Blip2ModelNotFoundError) as info:
        caption_records(records, Blip2Config(model=missing, progress=False))
    message = str(info.value)
    assert repr(missing) in message and "params:captioning.model" in message and "save_pretrained" in message


def test_half_precision_path_runs(tiny_model_dir, records):
    """bf16 on CPU exercises the mixed-dtype path used on GPUs (BLIP-2 keeps parts in fp32)."""
    out, _ = caption_records(records, config_for(tiny_model_dir, dtype="bfloat16", batch_size=8))
    expected = [reference_caption(tiny_model_dir, c, torch.bfloat16) for c in COLORS]
    assert out["caption"].tolist()[:5] == expected


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_auto_device_and_dtype_on_cuda(tiny_model_dir, records):
    cpu, _ = caption_records(records, config_for(tiny_model_dir, device="cpu"))
    gpu, _ = caption_records(records, config_for(tiny_model_dir))  # auto: cuda, bf16 or fp16
    assert all(isinstance(c, str) and c for c in gpu["caption"])
    assert len(gpu) == len(cpu)


def test_config_and_dtype_resolution():
    cpu = torch.device("cpu")
    assert resolve_dtype("auto", cpu) == torch.float32
    assert resolve_dtype("bf16", cpu) == torch.bfloat16 and resolve_dtype("float16", cpu) == torch.float16
    with pytest.raises(ValueError, match="dtype"):
        Blip2Config(dtype="int8")
    with pytest.raises(ValueError, match="batch_size"):
        Blip2Config(batch_size=0)
    with pytest.raises(ValueError, match="beam"):
        Blip2Config.from_dict({"beam": 2})
    assert Blip2Config().local_files_only is True
