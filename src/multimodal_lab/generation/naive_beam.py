"""Beam search the slow, obvious way: the reference the batched search is checked and timed against.

One image at a time, one beam at a time, and every step runs the decoder over the whole
prefix again (no KV cache) — the algorithm of the tutorials this project's captioner
replaces. It follows the selection rules of ``transformers``' beam search with
``early_stopping=True`` and ``length_penalty`` (default 1.0), so on the same model it
returns the same captions:

* the search starts from one live beam (the others scored -1e9);
* each step keeps the ``2 * num_beams`` best continuations over all live beams; those
  among the first ``num_beams`` that end (eos, or the length limit) become finished
  hypotheses scored ``sum of log-probabilities / generated length ** length_penalty``
  (the eos counted); the ``num_beams`` best unfinished ones live on;
* the finished list keeps its ``num_beams`` best and the search stops when it is full,
  or when every continuation ends.

Used by the tests (equality with ``generate``) and ``benchmarks/vit_captioner.py``.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

StepFn = Callable[[list[int]], torch.Tensor]  # token ids so far -> log-probabilities of the next token (V,)


def naive_beam_search(step_log_probs: StepFn, bos: int, eos: int, num_beams: int, max_new_tokens: int,
                      length_penalty: float = 1.0, num_return_sequences: int = 1) -> list[list[int]]:
    """Beam search for one input; returns the best hypotheses' tokens after bos (eos included when reached).

    Args:
        step_log_probs: runs the model on a whole prefix and returns the next token's
            log-probabilities (V,).
        bos, eos: start and end token ids.
        num_beams: beams kept.
        max_new_tokens: longest continuation.
        length_penalty: exponent of the length normalisation of finished hypotheses.
        num_return_sequences: how many hypotheses to return, best first.
    """
    if num_beams < 1 or max_new_tokens < 1:
        raise ValueError(f"num_beams and max_new_tokens must be >= 1, got {num_beams}, {max_new_tokens}")
    running: list[tuple[list[int], float]] = [([bos], 0.0)] + [([bos], -1e9)] * (num_beams - 1)
    finished: list[tuple[list[int], float]] = []
    max_length = 1 + max_new_tokens
    cur_len = 1
    keep = 2 * num_beams
    while True:
        scores, origins = [], []
        for index, (tokens, score) in enumerate(running):
            log_probs = step_log_probs(tokens).float()
            scores.append(log_probs + score)
            origins.append(index)
        flat = torch.stack(scores).reshape(-1)
        vocab = scores[0].shape[0]
        top_scores, top_indices = torch.topk(flat, k=keep)
        candidates = []
        for rank, (value, flat_index) in enumerate(zip(top_scores.tolist(), top_indices.tolist())):
            beam, token = divmod(flat_index, vocab)
            tokens = running[beam][0] + [token]
            ends = token == eos or cur_len + 1 >= max_length
            candidates.append((tokens, value, ends, rank))
        # New finished hypotheses: only from the first num_beams ranks, only while the list is not full.
        if len(finished) < num_beams:
            new = [(tokens, value / ((cur_len + 1 - 1) ** length_penalty))
                   for tokens, value, ends, rank in candidates if ends and rank < num_beams]
            finished = sorted(finished + new, key=lambda item: item[1], reverse=True)[:num_beams]
        # Live beams: the best unfinished continuations (finished ones sink to the bottom).
        ordered = sorted(candidates, key=lambda c: c[1] - (1e9 if c[2] else 0.0), reverse=True)
        running = [(tokens, value - (1e9 if ends else 0.0)) for tokens, value, ends, _ in ordered[:num_beams]]
        cur_len += 1
        if len(finished) >= num_beams or all(c[2] for c in candidates):
            break
    return [tokens[1:] for tokens, _ in finished[:num_return_sequences]]


def naive_caption_ids(model, features: torch.Tensor, num_beams: int, max_new_tokens: int,
                      length_penalty: float = 1.0) -> list[list[int]]:
    """The best beam of each image of a captioner, one image and one beam at a time, no cache.

    Args:
        model: a ``ViTCaptioner`` in eval mode.
        features: image tokens (B, N, D).
        length_penalty: as in :func:`naive_beam_search`.
    """
    tokenizer = model.tokenizer
    out = []
    with torch.no_grad():
        for row in range(features.shape[0]):
            image = features[row:row + 1]

            def step(tokens: list[int], image: torch.Tensor = image) -> torch.Tensor:
                ids = torch.tensor([tokens], device=image.device)
                logits = model.decoder(input_ids=ids, encoder_hidden_states=image, use_cache=False).logits
                return torch.log_softmax(logits[0, -1].float(), dim=-1)

            out.append(naive_beam_search(step, tokenizer.bos_token_id, tokenizer.eos_token_id, num_beams,
                                         max_new_tokens, length_penalty=length_penalty)[0])
    return out
