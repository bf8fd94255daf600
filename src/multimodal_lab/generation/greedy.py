"""Lean greedy decoding for GPT-2 language models with a preallocated (static) KV cache.

``GPT2LMHeadModel.generate`` pays a fixed cost per token — cache objects, mask building,
logits processors, stopping criteria — that dwarfs the arithmetic of the project's small
models: at batch 1 a 1M-parameter story model spends most of each step outside its
matrix products. This module runs the same computation with less around it:

* the prefix (image prefix + bos) goes through the model's own forward once (prefill),
  and its keys and values are copied into buffers sized for the whole story;
* each new token then runs the model's own weights through the same operations as
  GPT-2's modules — layer norms, ``Conv1D`` projections (``addmm``), the MLP with the
  model's own activation, the tied LM head — called as functions rather than through
  ``nn.Module`` dispatch (at batch 1 that dispatch costs more than the arithmetic), with
  the attention of one query against the cached keys written out as GPT-2's eager
  attention computes it (``softmax(q k^T * scaling) v``; a single new query may attend to
  every cached key, so no mask is needed).

The tokens are the ones ``generate`` picks (tested against it, token for token); the
output has ``generate``'s shape: new tokens only, the pad token after a row's eos, as
long as the longest row. :func:`supports` says when the lean path applies (greedy, no
repetition penalty, a plain GPT-2); otherwise callers use ``generate``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class _LayerWeights:
    """One GPT-2 block's parameters, fetched once (attribute lookups cost at batch 1)."""

    def __init__(self, block: nn.Module) -> None:
        self.ln1_w, self.ln1_b, self.ln1_eps = block.ln_1.weight, block.ln_1.bias, block.ln_1.eps
        self.attn_w, self.attn_b = block.attn.c_attn.weight, block.attn.c_attn.bias  # Conv1D: (D, 3D)
        self.proj_w, self.proj_b = block.attn.c_proj.weight, block.attn.c_proj.bias
        self.scaling = block.attn.scaling
        self.ln2_w, self.ln2_b, self.ln2_eps = block.ln_2.weight, block.ln_2.bias, block.ln_2.eps
        self.fc_w, self.fc_b = block.mlp.c_fc.weight, block.mlp.c_fc.bias
        self.out_w, self.out_b = block.mlp.c_proj.weight, block.mlp.c_proj.bias
        self.act = block.mlp.act  # the model's own activation


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
    layers = [_LayerWeights(block) for block in transformer.h]
    final_norm = transformer.ln_f
    head = lm.lm_head.weight  # (V, D)
    wte, wpe = transformer.wte.weight, transformer.wpe.weight
    pad = torch.full_like(token, pad_token_id)
    while len(tokens) < max_new_tokens and not bool(finished.all()):
        hidden = (wte[token] + wpe[position]).view(batch, width)  # (B, D)
        for index, layer in enumerate(layers):
            normed = F.layer_norm(hidden, (width,), layer.ln1_w, layer.ln1_b, layer.ln1_eps)
            qkv = torch.addmm(layer.attn_b, normed, layer.attn_w)  # (B, 3D)
            query, key, value = qkv.split(width, dim=1)
            keys[index][:, :, position] = key.view(batch, heads, head_dim)
            values[index][:, :, position] = value.view(batch, heads, head_dim)
            cached_keys = keys[index][:, :, :position + 1]  # (B, H, t, d)
            cached_values = values[index][:, :, :position + 1]
            scores = torch.matmul(query.view(batch, heads, 1, head_dim), cached_keys.transpose(-1, -2))
            weights = torch.softmax(scores * layer.scaling, dim=-1)  # (B, H, 1, t)
            attended = torch.matmul(weights.to(cached_values.dtype), cached_values)  # (B, H, 1, d)
            hidden = hidden + torch.addmm(layer.proj_b, attended.reshape(batch, width), layer.proj_w)
            normed = F.layer_norm(hidden, (width,), layer.ln2_w, layer.ln2_b, layer.ln2_eps)
            inner = layer.act(torch.addmm(layer.fc_b, normed, layer.fc_w))  # (B, 4D)
            hidden = hidden + torch.addmm(layer.out_b, inner, layer.out_w)
        hidden = F.layer_norm(hidden, (width,), final_norm.weight, final_norm.bias, final_norm.eps)
        logits = F.linear(hidden, head)  # (B, V), as the LM head computes it
        token = torch.where(finished, pad, logits.argmax(dim=-1))
        finished = finished | (token == eos_token_id)
        tokens.append(token)
        position += 1
    return torch.stack(tokens, dim=1)
