"""StoryGPT2: config checks, shapes, loss masking, freezing, save/load, pretrained GPT-2."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from tiny_models import make_word_tokenizer
from tokenizers import pre_tokenizers
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    GPT2Tokenizer,
    PreTrainedTokenizerFast,
)

from multimodal_lab.models.story_gpt2 import (
    StoryGPT2,
    StoryGPT2Config,
    build_story_gpt2,
)

WORDS = "a small large red blue green circle square star sat on the left right . it was calm".split()


pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


def word_tokenizer() -> PreTrainedTokenizerFast:
    return make_word_tokenizer(WORDS)


def tiny_config(**overrides) -> StoryGPT2Config:
    values = dict(encoder={"name": "cnn", "channels": [4, 8], "blocks_per_stage": 1, "grid": 2}, image_size=16,
                  prefix_tokens=4, mapper_hidden=16, n_layer=1, n_head=2, n_embd=16, n_positions=32,
                  max_story_tokens=12)
    grid = overrides.pop("grid", None)
    values.update(overrides)
    if grid is not None:
        values["encoder"] = {**values["encoder"], "grid": grid}
    return StoryGPT2Config(**values)


def batch(tokenizer, texts=("a red circle .", "a large blue star sat on the left ."), size=16):
    encoded = [[tokenizer.bos_token_id, *tokenizer(t, add_special_tokens=False)["input_ids"], tokenizer.eos_token_id]
               for t in texts]
    longest = max(map(len, encoded))
    input_ids = torch.full((len(texts), longest), tokenizer.pad_token_id)
    mask = torch.zeros_like(input_ids)
    for row, ids in enumerate(encoded):
        input_ids[row, :len(ids)] = torch.tensor(ids)
        mask[row, :len(ids)] = 1
    labels = input_ids.masked_fill(mask == 0, -100)
    labels[:, 0] = -100
    images = torch.rand(len(texts), 3, size, size, generator=torch.Generator().manual_seed(0))
    return {"images": images, "input_ids": input_ids, "attention_mask": mask, "labels": labels}


@pytest.fixture
def model():
    torch.manual_seed(0)
    return build_story_gpt2(tiny_config(), word_tokenizer())


def test_config_errors_name_the_problem():
    with pytest.raises(ValueError, match="n_embd 30 is not divisible by n_head 4"):
        tiny_config(n_embd=30, n_head=4)
    with pytest.raises(ValueError, match="raise n_positions to at least 16"):
        tiny_config(n_positions=10)
    with pytest.raises(ValueError, match="needs lm_name_or_path"):
        tiny_config(lm_source="pretrained")
    with pytest.raises(ValueError, match="unknown parameter 'n_layers'.* in StoryGPT2Config"):
        StoryGPT2Config.from_dict({"n_layers": 2})
    with pytest.raises(ValueError, match="prefix_tokens=4"):
        build_story_gpt2(tiny_config(prefix_tokens=3), word_tokenizer())  # mlp mapper: 4 grid tokens


def test_forward_shapes_loss_and_gradients(model):
    data = batch(model.tokenizer)
    out = model(**data)
    assert out.logits.shape == (*data["input_ids"].shape, len(model.tokenizer))
    assert model.encode_prefix(data["images"]).shape == (2, 4, 16)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    for part in (model.encoder, model.mapper, model.lm):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in part.parameters())


def test_loss_covers_story_tokens_only(model):
    data = batch(model.tokenizer)
    out = model(**data)
    # Recompute by hand: logits at t predict token t + 1; bos and padding carry -100.
    expected = F.cross_entropy(out.logits[:, :-1].reshape(-1, out.logits.shape[-1]), data["labels"][:, 1:].reshape(-1),
                               ignore_index=-100)
    assert torch.allclose(out.loss, expected)
    targets = (data["labels"][:, 1:] != -100).sum()
    assert targets == data["attention_mask"][:, 1:].sum()  # every real token after bos, eos included


def test_padding_does_not_change_real_positions(model):
    model.eval()  # batch norm statistics would otherwise depend on the batch
    data = batch(model.tokenizer)
    both = model(**data).logits
    short = {k: v[:1, : int(data["attention_mask"][0].sum())] if k != "images" else v[:1] for k, v in data.items()}
    alone = model(**short).logits
    assert torch.allclose(both[0, : alone.shape[1]], alone[0], atol=1e-5)


def test_prefix_carries_the_image(model):
    model.eval()
    data = batch(model.tokenizer)
    other = dict(data, images=torch.rand_like(data["images"]))
    assert not torch.allclose(model(**data).logits, model(**other).logits, atol=1e-4)


def test_attention_kernels_agree(model):
    model.eval()
    data = batch(model.tokenizer)
    assert model.lm.config._attn_implementation == "eager"  # the CPU default
    eager = model(**data).logits
    model.lm.set_attn_implementation("sdpa")
    assert torch.allclose(model(**data).logits, eager, atol=1e-5)


def test_lm_init_std_sets_the_scale_of_gpt2_weights():
    tokenizer = word_tokenizer()
    torch.manual_seed(0)
    wide = build_story_gpt2(tiny_config(lm_init_std=0.08, n_embd=64, mapper_hidden=64), tokenizer)
    narrow = build_story_gpt2(tiny_config(n_embd=64, mapper_hidden=64), tokenizer)
    assert wide.lm.transformer.h[0].attn.c_attn.weight.std().item() == pytest.approx(0.08, rel=0.1)
    assert narrow.lm.transformer.h[0].attn.c_attn.weight.std().item() == pytest.approx(0.02, rel=0.1)
    with pytest.raises(ValueError, match="lm_init_std must be positive"):
        tiny_config(lm_init_std=0.0)


def test_mapper_variants():
    tokenizer = word_tokenizer()
    one_to_many = build_story_gpt2(tiny_config(grid=1, prefix_tokens=3), tokenizer)
    assert one_to_many.encode_prefix(torch.rand(2, 3, 16, 16)).shape == (2, 3, 16)
    attention = build_story_gpt2(tiny_config(mapper="attention", prefix_tokens=5, mapper_heads=2), tokenizer)
    assert attention.encode_prefix(torch.rand(2, 3, 16, 16)).shape == (2, 5, 16)
    loss = attention(**batch(tokenizer)).loss
    loss.backward()
    assert attention.mapper.queries.grad is not None


def test_slots_mapper_splits_each_grid_token_between_the_slots():
    from multimodal_lab.models.story_gpt2 import PrefixMapper

    torch.manual_seed(0)
    mapper = PrefixMapper("slots", num_inputs=6, in_dim=8, prefix_tokens=3, out_dim=16, hidden=16, heads=1)
    features = torch.randn(2, 6, 8)
    out = mapper(features)
    assert out.shape == (2, 3, 16)
    share = mapper.slot_shares(features)
    assert share.shape == (2, 3, 6)
    assert torch.allclose(share.sum(dim=1), torch.ones(2, 6))  # every grid token shared out exactly once
    # Competition: a query that matches one grid token strongly takes it from the others.
    with torch.no_grad():
        mapper.queries.zero_()
        mapper.queries[0] = 50.0 * mapper.key(mapper.input_norm(features))[0, 0]
    share = mapper.slot_shares(features)
    assert share[0, 0, 0] > 0.99 and share[0, 1:, 0].max() < 0.01
    assert not torch.allclose(mapper(features)[0, 0], mapper(features)[0, 1])
    model = build_story_gpt2(tiny_config(mapper="slots", prefix_tokens=5), word_tokenizer())
    loss = model(**batch(model.tokenizer)).loss
    loss.backward()
    assert model.mapper.queries.grad is not None and model.mapper.key.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="'mlp', 'attention' or 'slots'"):
        tiny_config(mapper="pool")


def test_freeze_lm_trains_only_encoder_and_mapper():
    with pytest.warns(UserWarning, match="freeze_lm"):
        model = build_story_gpt2(tiny_config(freeze_lm=True, dropout=0.1), word_tokenizer())
    assert not any(p.requires_grad for p in model.lm.parameters())
    assert all(p.requires_grad for p in model.encoder.parameters())
    model.train()
    assert model.encoder.training and not model.lm.training  # frozen LM runs without dropout
    model(**batch(model.tokenizer)).loss.backward()
    assert all(p.grad is None for p in model.lm.parameters())


def test_save_and_load_round_trip(model, tmp_path):
    model.eval()
    data = batch(model.tokenizer)
    expected = model(**data).logits
    target = tmp_path / "story"
    model.save_pretrained(target)
    model.save_pretrained(target)  # overwriting an existing directory is fine
    assert sorted(p.name for p in target.iterdir()) == ["config.json", "model.safetensors", "tokenizer"]
    assert [p.name for p in tmp_path.iterdir()] == ["story"]  # no staging leftovers
    saved = json.loads((target / "config.json").read_text())
    assert saved["story_gpt2"]["prefix_tokens"] == 4
    loaded = StoryGPT2.from_pretrained(target).eval()
    assert torch.allclose(loaded(**data).logits, expected, atol=1e-6)
    assert loaded.tokenizer.get_vocab() == model.tokenizer.get_vocab()
    # Tied weights stay tied after loading.
    assert loaded.lm.lm_head.weight.data_ptr() == loaded.lm.transformer.wte.weight.data_ptr()


def test_pretrained_gpt2_and_its_tokenizer_load_from_a_local_directory(tmp_path):
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {"<|endoftext|>": 0, **{char: i + 1 for i, char in enumerate(sorted(alphabet))}}
    tokenizer = GPT2Tokenizer(vocab=vocab, merges=[])
    assert tokenizer.pad_token is None
    torch.manual_seed(0)
    lm = GPT2LMHeadModel(GPT2Config(vocab_size=len(vocab), n_layer=1, n_head=2, n_embd=32, n_positions=64,
                                    bos_token_id=0, eos_token_id=0))
    source = tmp_path / "tiny-gpt2"
    lm.save_pretrained(source)
    tokenizer.save_pretrained(source)

    config = tiny_config(lm_source="pretrained", lm_name_or_path=str(source), n_embd=16, n_positions=32)
    model = build_story_gpt2(config)
    assert model.config.n_embd == 32 and model.config.n_positions == 64  # taken from the loaded LM
    assert model.tokenizer.pad_token == "<|endoftext|>"  # pad falls back to eos
    assert torch.equal(model.lm.transformer.wte.weight, lm.transformer.wte.weight)
    data = batch(model.tokenizer, texts=("a red circle", "two blue stars"))
    model.eval()
    expected = model(**data).logits
    assert torch.isfinite(expected).all()

    model.save_pretrained(tmp_path / "story")
    loaded = StoryGPT2.from_pretrained(tmp_path / "story").eval()
    assert loaded.config.lm_source == "pretrained"
    assert torch.allclose(loaded(**data).logits, expected, atol=1e-6)


def test_encoder_block_is_checked_against_the_encoders_own_options():
    with pytest.raises(ValueError, match=r"'chanels' \(did you mean 'channels'\?\)"):
        tiny_config(encoder={"name": "cnn", "chanels": [4, 8]})
    with pytest.raises(ValueError, match="unknown encoder 'resnet'"):
        tiny_config(encoder={"name": "resnet"})
    with pytest.raises(TypeError, match="channels' must be a list of integers, got 32"):
        StoryGPT2Config.from_dict({"encoder": {"name": "cnn", "channels": 32}})
    config = tiny_config()
    assert config.encoder["name"] == "cnn" and config.encoder["grid"] == 2
    assert config.encoder["residual"] is True  # the block is stored complete


def test_a_format_1_model_directory_still_loads(tmp_path):
    model = build_story_gpt2(tiny_config(), word_tokenizer())
    model.save_pretrained(tmp_path / "m")
    payload = json.loads((tmp_path / "m" / "config.json").read_text())
    encoder = payload["story_gpt2"].pop("encoder")
    payload["story_gpt2"].update(encoder="cnn", encoder_channels=encoder["channels"],
                                 encoder_blocks=encoder["blocks_per_stage"], encoder_grid=encoder["grid"],
                                 encoder_kwargs={})
    payload["format_version"] = 1
    del payload["family"]
    (tmp_path / "m" / "config.json").write_text(json.dumps(payload))
    loaded = StoryGPT2.from_pretrained(tmp_path / "m")
    assert loaded.config.encoder == model.config.encoder
    data = batch(word_tokenizer())
    model.eval(), loaded.eval()
    with torch.no_grad():
        assert torch.equal(loaded(**data).logits, model(**data).logits)


def test_emphasised_words_weigh_more_in_the_loss():
    tokenizer = word_tokenizer()
    torch.manual_seed(0)
    plain = build_story_gpt2(tiny_config(), tokenizer).eval()
    weighted = build_story_gpt2(tiny_config(emphasis_words=["red", "blue"], emphasis_weight=3.0), tokenizer).eval()
    weighted.load_state_dict(plain.state_dict())
    data = batch(tokenizer)
    with torch.no_grad():
        base, heavy = plain(**data), weighted(**data)
        logits = base.logits[:, :-1].flatten(0, 1)
        targets = data["labels"][:, 1:].flatten()
        per_token = F.cross_entropy(logits, targets, ignore_index=-100, reduction="none")
    valid = targets != -100
    emphasised = torch.isin(targets, torch.tensor([tokenizer.convert_tokens_to_ids(w) for w in ("red", "blue")]))
    expected = (per_token * torch.where(emphasised, 3.0, 1.0) * valid).sum() / valid.sum()
    assert emphasised.sum() == 2  # "red" and "blue" appear once each in the batch
    assert heavy.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert heavy.loss.item() > base.loss.item() and base.num_targets == heavy.num_targets == int(valid.sum())
    with pytest.raises(ValueError, match="emphasis_weight must be positive"):
        tiny_config(emphasis_weight=0.0)


def test_region_loss_trains_a_head_on_the_grid_tokens_from_story_targets():
    from multimodal_lab.families.story_gpt2 import region_targets

    tokenizer = word_tokenizer()
    torch.manual_seed(0)
    model = build_story_gpt2(tiny_config(region_loss_weight=0.5), tokenizer)
    assert model.region_head is not None and len(model.config.region_colours) == 8
    stories = ["a red circle sat near the top left .", "a large blue star sat on the left ."]
    targets = region_targets(stories, 2, model.config.region_colours, model.config.region_shapes)
    # grid 2: "near the top left" is cell 0; "on the left" names no cell of a 2x2 grid
    assert targets["region_masks"][0, 0].tolist() == [True, False, False, False]
    assert targets["region_colours"][:, 0].tolist() == [0, -100] and targets["region_shapes"][0, 0] == 0
    data = batch(tokenizer)
    out = model(**data, **targets)
    plain = model(**data)
    assert out.region_loss is not None and out.region_loss.item() > 0
    assert out.loss.item() == pytest.approx(plain.loss.item() + 0.5 * out.region_loss.item(), rel=1e-5)
    out.loss.backward()
    assert model.region_head.weight.grad.abs().sum() > 0  # the head and the encoder learn from it
    none = {k: v.clone() for k, v in targets.items()}
    none["region_colours"][:] = -100
    assert model(**data, **none).region_loss is None  # a batch without targets adds nothing


def test_region_features_start_neutral_and_learn_from_the_story_loss():
    tokenizer = word_tokenizer()
    torch.manual_seed(0)
    plain = build_story_gpt2(tiny_config(region_loss_weight=0.5), tokenizer)
    torch.manual_seed(0)
    model = build_story_gpt2(tiny_config(region_loss_weight=0.5, region_features=True), tokenizer)
    data = batch(tokenizer)
    # zero-initialised: the mapper first reads exactly the encoder's tokens
    assert torch.equal(model.encode_prefix(data["images"]), plain.encode_prefix(data["images"]))
    model(**data).loss.backward()  # the story loss alone (no region targets) reaches the embedding
    assert model.region_embedding.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="needs region_loss_weight > 0"):
        tiny_config(region_features=True)
