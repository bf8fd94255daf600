"""Lean greedy decoding for GPT-2 language models with a preallocated (static) KV cache.

``GPT2LMHeadModel.generate`` pays a fixed cost per token — cache objects, mask building,
logits processors, stopping criteria — that dwarfs the arithmetic of the project's small
models: at batch 1 a 1M-parameter story model spends most of each step outside its
matrix products. This module runs the same computation with less around it:

* the prefix (image prefix + bos) goes through the model's own forward once (prefill),
  and its keys and values are copied into buffers sized for the whole story;
* each new token then runs the model's own modules (embeddings, ``ln_1``, ``c_attn``,
  ``c_proj``, ``ln_2``, ``mlp``, ``ln_f``, the LM head) with the attention of one query
  against the cached keys written out as GPT-2's eager attention computes it
  (``softmax(q k^T * scaling) v``; a single new query may attend to every cached key,
  so no mask is needed).

The tokens are the ones ``generate`` picks (tested against it, token for token); the
output has ``generate``'s shape: new tokens only, the pad token after a row's eos, as
long as the longest row. :func:`supports` says when the lean path applies (greedy, no
repetition penalty, a plain GPT-2); otherwise callers use ``generate``.
"""
from __future__ import annotations

import torch
from torch import nn


def supports(lm: nn.Module) -> bool:
    """True when ``lm`` is a GPT-2 whose attention this module reproduces exactly."""
    config = getattr(lm, "config", None)
    return (
        getattr(config, "model_type", None) == "gpt2"
        and not getattr(config, "reorder_and_upcast_attn", False)
        and not getattr(config, "add_cross_attention", False)
        and hasattr(lm, "transformer")
    )


@torch.inference_mode()
def greedy_decode(lm: nn.Module, inputs_embeds: torch.Tensor, max_new_tokens: int, eos_token_id: int,
                  pad_token_id: int) -> torch.Tensor:
    """Greedy continuation of ``inputs_embeds`` (no padding inside it), new tokens only.

    Args:
        lm: a ``GPT2LMHeadModel`` in eval mode (see :func:`supports`).
        inputs_embeds: (B, L, D) the prompt's embeddings (image prefix + bos).
        max_new_tokens: most tokens generated per row.
        eos_token_id: ends a row; the row is padded after it.
        pad_token_id: written after a row's eos.

    Returns:
        (B, T) token ids, T <= max_new_tokens, as ``generate`` returns them.
    """
    transformer = lm.transformer
    batch, length, width = inputs_embeds.shape
    heads = lm.config.n_head
    head_dim = width // heads
    total = length + max_new_tokens
    if total > lm.config.n_positions + 1:
        raise ValueError(f"{length} prompt positions + {max_new_tokens} new tokens exceed n_positions "
                         f"{lm.config.n_positions}")
    out = lm(inputs_embeds=inputs_embeds, use_cache=True)  # prefill: the model's own forward
    keys, values = [], []
    for layer in out.past_key_values.layers:
        k = inputs_embeds.new_empty(batch, heads, total, head_dim)  # (B, H, L + new, d)
        v = inputs_embeds.new_empty(batch, heads, total, head_dim)
        k[:, :, :length] = layer.keys
        v[:, :, :length] = layer.values
        keys.append(k)
        values.append(v)
    token = out.logits[:, -1].argmax(dim=-1)  # (B,)
    finished = token == eos_token_id
    tokens = [token]
    position = length
    while len(tokens) < max_new_tokens and not bool(finished.all()):
        hidden = transformer.wte(token[:, None]) + transformer.wpe.weight[position]  # (B, 1, D)
        for index, block in enumerate(transformer.h):
            attention = block.attn
            query, key, value = attention.c_attn(block.ln_1(hidden)).split(width, dim=2)
            query = query.view(batch, 1, heads, head_dim).transpose(1, 2)  # (B, H, 1, d)
            keys[index][:, :, position] = key.view(batch, heads, head_dim)
            values[index][:, :, position] = value.view(batch, heads, head_dim)
            cached_keys = keys[index][:, :, :position + 1]  # (B, H, t, d)
            cached_values = values[index][:, :, :position + 1]
            weights = torch.softmax(torch.matmul(query, cached_keys.transpose(-1, -2)) * attention.scaling, dim=-1)
            attended = torch.matmul(weights.to(cached_values.dtype), cached_values)  # (B, H, 1, d)
            hidden = hidden + attention.c_proj(attended.transpose(1, 2).reshape(batch, 1, width))
            hidden = hidden + block.mlp(block.ln_2(hidden))
        logits = lm.lm_head(transformer.ln_f(hidden))[:, -1]  # (B, V)
        token = torch.where(finished, torch.full_like(token, pad_token_id), logits.argmax(dim=-1))
        finished = finished | (token == eos_token_id)
        tokens.append(token)
        position += 1
    return torch.stack(tokens, dim=1)
