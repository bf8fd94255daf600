"""Sampling where every row brings its own random numbers: the same row, the same tokens, in any batch.

``generate(do_sample=True)`` draws every row's tokens from one global generator, so a row's
text depends on the rows drawn beside it and before it. Here a row's token at step ``t`` is
chosen with its own number ``uniforms[row, t]`` (inverse CDF of the step's distribution,
after the temperature / top-k / top-p of :class:`GenerationSettings`, applied with
transformers' logits warpers), so a row's text is a function of its numbers alone. Greedy
and beam search need no numbers and go through the model's own ``generate``.
"""
from __future__ import annotations

import torch
from torch import nn

from multimodal_lab.generation.story import GenerationSettings, generate_kwargs


def warpers(settings: GenerationSettings):
    """transformers' temperature, top-k and top-p warpers for ``settings`` (those that change anything)."""
    from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    chain = LogitsProcessorList()
    if settings.temperature != 1.0:
        chain.append(TemperatureLogitsWarper(settings.temperature))
    if settings.top_k > 0:
        chain.append(TopKLogitsWarper(settings.top_k))
    if settings.top_p < 1.0:
        chain.append(TopPLogitsWarper(settings.top_p))
    return chain


@torch.no_grad()
def sample_with_uniforms(lm: nn.Module, bos: int, eos: int, pad: int, uniforms: torch.Tensor,
                         settings: GenerationSettings | None = None) -> torch.Tensor:
    """Decode from ``bos`` with a causal LM, one token per column of ``uniforms``.

    Args:
        lm: a transformers causal LM (``lm(input_ids, past_key_values=...)``).
        bos, eos, pad: token ids; a row stops at eos and is padded after it.
        uniforms: (B, T) numbers in [0, 1): row b's token t is the first whose cumulative
            probability exceeds ``uniforms[b, t]``; T is the most tokens decoded.
        settings: strategy ``"sample"`` (default; temperature, top_k, top_p), ``"greedy"`` or
            ``"beam"`` (``num_beams``, ``length_penalty``; the numbers are not used).

    Returns:
        (B, T) token ids (the new tokens, eos included, then pad).
    """
    settings = settings or GenerationSettings(strategy="sample")
    batch, steps = uniforms.shape
    device = uniforms.device
    start = torch.full((batch, 1), bos, dtype=torch.long, device=device)
    if settings.strategy == "beam":
        out = lm.generate(input_ids=start[:1], attention_mask=torch.ones_like(start[:1]), eos_token_id=eos,
                          pad_token_id=pad, **{**generate_kwargs(settings), "max_new_tokens": steps})[:, 1:]
        row = torch.full((1, steps), pad, dtype=torch.long, device=device)
        row[:, :out.shape[1]] = out
        return row.expand(batch, -1).clone()
    chain = warpers(settings) if settings.strategy == "sample" else None
    ids = torch.full((batch, steps), pad, dtype=torch.long, device=device)
    done = torch.zeros(batch, dtype=torch.bool, device=device)
    tokens, cache = start, None
    mask = torch.ones(batch, steps + 1, dtype=torch.long, device=device)  # rows past eos read pad: never used
    for t in range(steps):
        out = lm(input_ids=tokens, attention_mask=mask[:, :t + 1], cache=cache, use_cache=True)
        cache = out.cache
        logits = out.logits[:, -1].float()
        if chain is None:
            choice = logits.argmax(dim=-1)
        else:
            scores = chain(ids[:, :t], logits)
            probs = torch.softmax(scores.double(), dim=-1)
            cdf = probs.cumsum(dim=-1)
            target = uniforms[:, t:t + 1].to(cdf.dtype) * cdf[:, -1:]
            choice = torch.searchsorted(cdf, target, right=True).squeeze(1).clamp(max=probs.shape[1] - 1)
            # a token of zero probability (cut by top-k/top-p) is never chosen, even at a CDF tie
            choice = torch.where(probs.gather(1, choice[:, None]).squeeze(1) > 0, choice, scores.argmax(dim=-1))
        choice = torch.where(done, torch.full_like(choice, pad), choice)
        ids[:, t] = choice
        done |= choice == eos
        if bool(done.all()):
            break
        tokens = choice[:, None]
    return ids
