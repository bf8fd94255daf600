"""The lean greedy loop picks exactly the tokens GPT-2's generate picks, with its output shape."""
from __future__ import annotations

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from multimodal_lab.generation.greedy import greedy_decode, supports

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_lm(seed: int, **overrides) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=23, n_positions=40, n_embd=16, n_layer=2, n_head=4,
                        **{"attn_implementation": "eager", **overrides})
    return GPT2LMHeadModel(config).eval()


def reference(lm, embeds, new, eos, pad):
    return lm.generate(inputs_embeds=embeds, attention_mask=torch.ones(embeds.shape[:2], dtype=torch.long),
                       max_new_tokens=new, do_sample=False, num_beams=1, eos_token_id=eos, pad_token_id=pad)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("batch", [1, 5])
def test_same_tokens_as_generate(seed, batch):
    lm = tiny_lm(seed)
    embeds = torch.randn(batch, 7, 16, generator=torch.Generator().manual_seed(seed))
    free = reference(lm, embeds, 20, eos=22, pad=0)  # 22: rarely picked, rows run long
    # an eos that some rows hit early: the token row 0 picks third
    eos = int(free[0, 2])
    expected = reference(lm, embeds, 20, eos=eos, pad=0)
    got = greedy_decode(lm, embeds, 20, eos_token_id=eos, pad_token_id=0)
    assert got.shape == expected.shape and torch.equal(got, expected)
    assert (got == eos).any()  # the early-stop path ran


def test_every_row_finished_stops_early_and_max_tokens_caps():
    lm = tiny_lm(3)
    embeds = torch.randn(2, 4, 16, generator=torch.Generator().manual_seed(3))
    first = greedy_decode(lm, embeds, 1, eos_token_id=22, pad_token_id=0)
    assert first.shape == (2, 1)
    eos = int(first[0, 0])
    stopped = greedy_decode(lm, embeds, 10, eos_token_id=eos, pad_token_id=0)
    assert torch.equal(stopped, reference(lm, embeds, 10, eos=eos, pad=0))


def test_only_plain_gpt2_is_supported():
    assert supports(tiny_lm(0))
    assert not supports(tiny_lm(0, reorder_and_upcast_attn=True))
    assert not supports(torch.nn.Linear(2, 2))
