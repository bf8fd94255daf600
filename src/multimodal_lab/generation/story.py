"""Story generation from images with a prefix language model.

The image prefix (B, k, D) and the bos embedding form ``inputs_embeds``; the language
model continues from there with its KV cache, in one batch: greedy decoding of a GPT-2
goes through the lean static-cache loop of :mod:`~multimodal_lab.generation.greedy`
(the same tokens, a fraction of the per-token overhead), sampling and beam search
through the model's own ``generate``. Only the new tokens come back, decoded to clean
text.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import nn

from multimodal_lab.generation.greedy import greedy_decode, supports

STRATEGIES = ("greedy", "sample", "beam")


@dataclass
class GenerationSettings:
    """How stories are decoded."""

    max_new_tokens: int = 64  # longest story in tokens (eos ends earlier)
    strategy: str = "greedy"  # "greedy", "sample" or "beam"
    temperature: float = 1.0  # softmax temperature when sampling
    top_k: int = 0  # keep the k most likely tokens when sampling (0 = all)
    top_p: float = 1.0  # nucleus mass kept when sampling (1.0 = all)
    repetition_penalty: float = 1.0  # > 1 discourages repeating tokens
    num_beams: int = 4  # beams for strategy "beam"
    # beam search ranks finished hypotheses by log-probability / length ** length_penalty:
    # 0 = plain log-probability (favours short texts), 1 = per-token mean (transformers' default)
    length_penalty: float = 1.0
    seed: int = 0  # sampling seed: the same seed gives the same stories
    decoder: str = "auto"  # "auto": greedy GPT-2 through the lean loop (same tokens); "generate": always generate()

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        if self.max_new_tokens <= 0:
            raise ValueError(f"max_new_tokens must be positive, got {self.max_new_tokens}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be positive, got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if self.decoder not in ("auto", "generate"):
            raise ValueError(f"decoder must be 'auto' or 'generate', got {self.decoder!r}")
        if self.strategy == "beam" and self.num_beams < 2:
            raise ValueError(f"strategy 'beam' needs num_beams >= 2, got {self.num_beams}")


_SPACE_BEFORE_PUNCT = re.compile(r"\s+([.,!?;:])")
_SPACES = re.compile(r"\s+")


def clean_text(text: str) -> str:
    """Tidy decoded text: no space before punctuation, single spaces, no edge spaces."""
    return _SPACE_BEFORE_PUNCT.sub(r"\1", _SPACES.sub(" ", text)).strip()


def generate_kwargs(settings: GenerationSettings) -> dict:
    kwargs: dict = {"max_new_tokens": settings.max_new_tokens, "repetition_penalty": settings.repetition_penalty}
    if settings.strategy == "greedy":
        kwargs.update(do_sample=False, num_beams=1)
    elif settings.strategy == "beam":
        kwargs.update(do_sample=False, num_beams=settings.num_beams, early_stopping=True,
                      length_penalty=settings.length_penalty)
    else:
        kwargs.update(do_sample=True, num_beams=1, temperature=settings.temperature,
                      top_k=settings.top_k if settings.top_k > 0 else None, top_p=settings.top_p)
    return kwargs


@torch.no_grad()
def generate_token_ids(model: nn.Module, images: torch.Tensor | None, settings: GenerationSettings,
                       prefix_override: torch.Tensor | None = None) -> torch.Tensor:
    """Generate story token ids (the new tokens only) for a batch of images or prefixes.

    Args:
        model: a ``StoryGPT2`` (anything with ``encode_prefix``, ``embed_tokens``,
            ``lm``, ``tokenizer`` and ``config.n_positions``).
        images: (B, 3, S, S) float in [0, 1]; may be None when ``prefix_override`` is given.
        settings: decoding settings.
        prefix_override: (B, k, D) prefix used instead of the images' own (a control's
            conditioning, or one computed earlier).

    Returns:
        (B, L) token ids, padded with the pad token after eos.

    Raises:
        ValueError: when prefix + bos + ``max_new_tokens`` does not fit the model's
            context (``n_positions``).
    """
    if images is None and prefix_override is None:
        raise ValueError("generate_token_ids needs images or a prefix_override")
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        prefix = model.encode_prefix(images.to(device)) if prefix_override is None else prefix_override.to(device)
        check_fits(model, prefix.shape[1], settings.max_new_tokens)
        batch = prefix.shape[0]
        tokenizer = model.tokenizer
        bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        bos_ids = torch.full((batch, 1), bos, dtype=torch.long, device=device)
        embeds = torch.cat([prefix.to(model.lm.dtype), model.embed_tokens(bos_ids)], dim=1)  # (B, k + 1, D)
        attention_mask = torch.ones(embeds.shape[:2], dtype=torch.long, device=device)
        if _lean(model.lm, settings):
            return greedy_decode(model.lm, embeds, settings.max_new_tokens, tokenizer.eos_token_id,
                                 tokenizer.pad_token_id)
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(settings.seed)  # sampling draws from the global generator
            output = model.lm.generate(inputs_embeds=embeds, attention_mask=attention_mask,
                                       eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                                       **generate_kwargs(settings))
        return output
    finally:
        model.train(was_training)


def _lean(lm: nn.Module, settings: GenerationSettings) -> bool:
    """Greedy without a repetition penalty or generation-config constraints: the lean loop applies."""
    config = getattr(lm, "generation_config", None)
    constrained = config is not None and (
        (config.min_new_tokens or 0) > 0 or config.suppress_tokens or config.bad_words_ids
        or config.forced_eos_token_id is not None
    )
    return (settings.decoder == "auto" and settings.strategy == "greedy" and settings.repetition_penalty == 1.0
            and supports(lm) and not constrained)


def check_fits(model: nn.Module, prefix_tokens: int, max_new_tokens: int) -> None:
    """Fail clearly when prefix + bos + ``max_new_tokens`` exceed the language model's context."""
    limit = int(model.lm.config.n_positions)
    needed = prefix_tokens + 1 + max_new_tokens
    if needed > limit:
        raise ValueError(
            f"{prefix_tokens} prefix tokens + bos + max_new_tokens {max_new_tokens} = {needed} positions, but "
            f"the model holds {limit} (n_positions); lower max_new_tokens to at most {limit - prefix_tokens - 1}"
        )


def decode_stories(model: nn.Module, token_ids: torch.Tensor) -> list[str]:
    """Generated ids (B, L) -> clean texts (special tokens stripped, whitespace tidied)."""
    return [clean_text(text) for text in model.tokenizer.batch_decode(token_ids, skip_special_tokens=True)]


def generate_from_prefix(model: nn.Module, prefix: torch.Tensor, settings: GenerationSettings | None = None,
                         batch_size: int = 256) -> list[str]:
    """One story per prefix row (B, k, D): an image's own prefix or a control's."""
    settings = settings or GenerationSettings()
    if prefix.ndim != 3:
        raise ValueError(f"prefix must be (B, k, D), got shape {tuple(prefix.shape)}")
    stories: list[str] = []
    for start in range(0, prefix.shape[0], batch_size):
        stories.extend(decode_stories(model, generate_token_ids(model, None, settings,
                                                                prefix[start:start + batch_size])))
    return stories


def generate_stories(model: nn.Module, images: torch.Tensor, settings: GenerationSettings | None = None,
                     prefix_override: torch.Tensor | None = None, batch_size: int = 256) -> list[str]:
    """Generate one story per image.

    Args:
        model: a ``StoryGPT2``.
        images: (B, 3, S, S) float in [0, 1].
        settings: decoding settings (defaults: greedy, 64 new tokens).
        prefix_override: (B, k, D) prefix to use instead of the images' own.
        batch_size: images generated together (bounds memory on large sets).

    Returns:
        B stories, special tokens stripped, whitespace tidied.
    """
    settings = settings or GenerationSettings()
    if images.ndim != 4:
        raise ValueError(f"images must be (B, 3, S, S), got shape {tuple(images.shape)}")
    if prefix_override is not None and prefix_override.shape[0] != images.shape[0]:
        raise ValueError(f"prefix_override has batch {prefix_override.shape[0]} but images have {images.shape[0]}")
    stories: list[str] = []
    for start in range(0, images.shape[0], batch_size):
        chunk = slice(start, start + batch_size)
        override = prefix_override[chunk] if prefix_override is not None else None
        stories.extend(decode_stories(model, generate_token_ids(model, images[chunk], settings, override)))
    return stories
