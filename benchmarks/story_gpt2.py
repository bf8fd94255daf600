"""story_gpt2 speed: the project's training loop and KV-cache generation vs plain baselines.

Usage::

    PYTHONPATH=src python benchmarks/story_gpt2.py                 # defaults below
    PYTHONPATH=src python benchmarks/story_gpt2.py --train-steps 10 --repeats 2   # quick
    PYTHONPATH=src python benchmarks/story_gpt2.py --device cuda --mixed-precision bf16

Both comparisons run side by side in one process, on the same model weights, data and
batch size, alternating the two contenders ``--repeats`` times and reporting medians,
so machine load affects both alike.

1. Training samples/s: ``training.loop.train`` (the loop every pipeline uses: seeded
   sampler, AdamW groups, lr schedule, gradient clipping, accelerate) against a minimal
   PyTorch loop (DataLoader, AdamW, forward, backward, step). Target ratio >= 0.9.
2. Generation tokens/s at ``--new-tokens`` new tokens: ``generation.story.generate_stories``
   (GPT-2 ``generate`` with its KV cache) against recomputing the whole sequence at every
   step without a cache, as ClipCap's reference decoding does (feed all embeddings, take
   the argmax of the last logit). End-of-story is suppressed in both (``min_new_tokens``
   for ``generate``, a masked eos logit for the baseline), so both write exactly
   ``--new-tokens`` tokens; the script checks this and how often the two agree.
   Target ratio >= 5x.
3. Interactive latency: one image, one story (at most ``--new-tokens`` tokens) through
   ``StoryTeller.tell`` at batch 1, greedy: with ``decoder="generate"`` (GPT-2's
   ``generate``, the path before the lean decoder) against the default lean static-cache
   loop (``generation.greedy``). The stories must be the same. Target: >= 3x lower.
   ``--model DIR`` times a trained model (a real story that ends at its end token) instead
   of the untrained one, whose greedy output is special tokens up to the length limit.

The model is the one in ``conf/base/parameters_story_gpt2.yml`` (``story_gpt2.model``)
when that file exists and describes a GPT-2 built from config, else ``StoryGPT2Config()``
defaults (2 layers, width 128, 64 prefix tokens, 64x64 images). The data are scene-world
stories with a word tokenizer trained on them.
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from multimodal_lab.data.record_dataset import RecordCollator, RecordDataset, TextField
from multimodal_lab.data.scene_world import SceneWorldConfig, generate_scene_world
from multimodal_lab.data.vocab import VocabConfig, train_tokenizer
from multimodal_lab.generation.story import (
    GenerationSettings,
    generate_stories,
    generate_token_ids,
)
from multimodal_lab.models.story_gpt2 import StoryGPT2, StoryGPT2Config
from multimodal_lab.training.loop import TrainConfig, train

PARAMS_FILE = Path(__file__).resolve().parents[1] / "conf" / "base" / "parameters_story_gpt2.yml"


def model_settings(params_file: Path) -> tuple[StoryGPT2Config, dict[str, Any], str]:
    """The story model config and the ``train`` params from the parameters file, if usable."""
    if not params_file.is_file():
        return StoryGPT2Config(), {}, "StoryGPT2Config() defaults (no parameters_story_gpt2.yml)"
    import yaml  # a Kedro dependency; only needed here

    params = yaml.safe_load(params_file.read_text()) or {}
    story = params.get("story_gpt2", params)
    model_params = dict(story.get("model") or {})
    if model_params.get("lm_source", "config") != "config":
        return StoryGPT2Config(), {}, "StoryGPT2Config() defaults (the parameters load a pretrained LM)"
    train_params = dict(story.get("train") or {})
    return StoryGPT2Config.from_dict(model_params), train_params, f"{params_file.name} (story_gpt2.model)"


def build_data(config: StoryGPT2Config, n_records: int, seed: int) -> tuple[RecordDataset, RecordCollator, Any]:
    """Scene-world stories as a cached dataset, its collator, and the tokenizer trained on them."""
    world = SceneWorldConfig(seed=seed, n_scenes=n_records, n_engravings=0, n_sequences=0,
                             image_size=max(32, min(512, config.image_size)),
                             bad_license_fraction=0.0, damaged_fraction=0.0)
    records = generate_scene_world(world)
    tokenizer = train_tokenizer(records["story"], VocabConfig(kind="word", min_frequency=1))
    texts = [TextField("story", tokenizer, config.max_story_tokens)]  # as the story_gpt2 family reads them
    dataset = RecordDataset(records, image=config.image_size, texts=texts, cache_images=True)
    return dataset, RecordCollator(texts), tokenizer


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def plain_training(model: StoryGPT2, dataset: RecordDataset, collate: RecordCollator, steps: int,
                   batch_size: int, lr: float, seed: int, device: torch.device, bf16: bool) -> float:
    """Seconds for ``steps`` steps of a minimal loop: DataLoader, AdamW, forward, backward, step."""
    model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=True, collate_fn=collate,
                        generator=torch.Generator().manual_seed(seed))
    _sync(device)
    started = time.perf_counter()
    batches = iter(loader)
    for _ in range(steps):
        try:
            batch = next(batches)
        except StopIteration:
            batches = iter(loader)
            batch = next(batches)
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    _sync(device)
    return time.perf_counter() - started


def project_training(model: StoryGPT2, dataset: RecordDataset, collate: RecordCollator, steps: int,
                     batch_size: int, lr: float, seed: int, mixed_precision: str) -> float:
    """Seconds the project's ``train`` reports for ``steps`` steps (setup excluded, as above)."""
    config = TrainConfig(seed=seed, max_steps=steps, batch_size=batch_size, lr=lr, warmup_steps=0,
                         eval_every=0, progress_bar=False, mixed_precision=mixed_precision)
    return train(model, dataset, None, collate, config).train_seconds


@torch.no_grad()
def generate_without_cache(model: StoryGPT2, images: torch.Tensor, new_tokens: int) -> torch.Tensor:
    """Greedy decoding that re-runs GPT-2 over the whole sequence at every step (no KV cache).

    Args:
        model: the story model.
        images: (B, 3, S, S) in [0, 1].
        new_tokens: tokens to generate; eos is masked so every story has exactly this many.

    Returns:
        (B, new_tokens) token ids.
    """
    tokenizer = model.tokenizer
    prefix = model.encode_prefix(images)  # (B, k, D)
    bos = torch.full((images.shape[0], 1), tokenizer.bos_token_id, dtype=torch.long, device=images.device)
    embeds = torch.cat([prefix, model.embed_tokens(bos)], dim=1)  # (B, k + 1, D)
    generated = []
    for _ in range(new_tokens):
        logits = model.lm(inputs_embeds=embeds, use_cache=False).logits[:, -1, :]  # (B, V)
        logits[:, tokenizer.eos_token_id] = -torch.inf
        next_ids = logits.argmax(dim=-1)  # (B,)
        generated.append(next_ids)
        embeds = torch.cat([embeds, model.embed_tokens(next_ids[:, None])], dim=1)  # (B, t + 1, D)
    return torch.stack(generated, dim=1)


def _timed(function, device: torch.device) -> tuple[float, Any]:
    _sync(device)
    started = time.perf_counter()
    result = function()
    _sync(device)
    return time.perf_counter() - started, result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (cuda when available)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    parser.add_argument("--params", type=Path, default=PARAMS_FILE, help="parameters_story_gpt2.yml to read")
    parser.add_argument("--records", type=int, default=512, help="scene-world stories in the training set")
    parser.add_argument("--batch-size", type=int, default=0, help="training batch (0 = from params, else 32)")
    parser.add_argument("--train-steps", type=int, default=20, help="optimizer steps per timed training run")
    parser.add_argument("--gen-batch", type=int, default=32, help="images generated together")
    parser.add_argument("--new-tokens", type=int, default=64, help="tokens generated per image")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each contender (median kept)")
    parser.add_argument("--mixed-precision", default="no", choices=("no", "bf16"),
                        help="bf16 autocast for both training loops (GPU)")
    parser.add_argument("--parts", default="train,generate,latency", help="comma list: train, generate, latency")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", type=Path, default=None,
                        help="a trained story_gpt2 model directory for the latency part (e.g. the main job's "
                             "data/06_models/story_gpt2/model/<version>/model), so a real story is timed; "
                             "default: the untrained model of --params")
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else ("cpu" if args.device == "auto" else args.device))
    config, train_params, source = model_settings(args.params)
    needed = config.prefix_tokens + args.new_tokens
    if needed > config.n_positions:
        print(f"note: prefix {config.prefix_tokens} + bos + {args.new_tokens} new tokens exceed n_positions "
              f"{config.n_positions}; n_positions raised to {needed} for this benchmark")
        config.n_positions = needed
    batch_size = args.batch_size or int(train_params.get("batch_size") or 32)
    lr = float(train_params.get("lr") or 1e-3)

    dataset, collate, tokenizer = build_data(config, args.records, args.seed)
    torch.manual_seed(args.seed)
    base = StoryGPT2(config, tokenizer)
    initial = copy.deepcopy(base.state_dict())
    n_params = sum(p.numel() for p in base.parameters())
    print(f"story_gpt2 benchmark: device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    print(f"model from {source}: {n_params / 1e6:.2f}M parameters, n_layer {config.n_layer}, "
          f"n_embd {config.n_embd}, prefix {config.prefix_tokens}, image {config.image_size}px, "
          f"{len(tokenizer)} tokens")

    # ---- 1. training throughput
    def fresh() -> StoryGPT2:
        base.load_state_dict(initial)
        return base

    parts = {part.strip() for part in args.parts.split(",")}
    unknown = parts - {"train", "generate", "latency"}
    if unknown:
        parser.error(f"unknown --parts {sorted(unknown)}; use train, generate and/or latency")
    rows: list[tuple[str, float, float, str, str]] = []
    notes: list[str] = []
    plain_times, project_times = [], []
    if "train" in parts:  # warm-up: threads, allocator, kernels
        plain_training(fresh(), dataset, collate, 3, batch_size, lr, args.seed, device,
                       args.mixed_precision == "bf16")
    for _ in range(args.repeats if "train" in parts else 0):
        plain_times.append(plain_training(fresh(), dataset, collate, args.train_steps, batch_size, lr,
                                          args.seed, device, args.mixed_precision == "bf16"))
        project_times.append(project_training(fresh(), dataset, collate, args.train_steps, batch_size, lr,
                                              args.seed, args.mixed_precision))
    if "train" in parts:
        samples = args.train_steps * batch_size
        plain_sps = samples / statistics.median(plain_times)
        project_sps = samples / statistics.median(project_times)
        rows.append((f"training samples/s (batch {batch_size})", project_sps, plain_sps,
                     f"{project_sps / plain_sps:.2f}", ">= 0.9"))
        notes.append(f"training: {args.train_steps} steps x {args.repeats} runs, median "
                     f"{statistics.median(project_times):.2f} s (project loop) vs "
                     f"{statistics.median(plain_times):.2f} s (plain loop)")
    for part, measure in (("generate", _generation), ("latency", _latency)):
        if part not in parts:
            continue
        model = fresh()
        if part == "latency" and args.model is not None:
            model = StoryGPT2.from_pretrained(args.model, map_location=str(device))
        row, note = measure(model, dataset, device, args)
        if row is None:
            print(note, file=sys.stderr)
            return 1
        rows.append(row)
        notes.append(note)

    print()
    print(f"{'measure':<36}{'project':>10}{'baseline':>10}{'ratio':>8}  target")
    for name, project, baseline, ratio, target in rows:
        print(f"{name:<36}{project:>10.1f}{baseline:>10.1f}{ratio:>8}  {target}")
    print()
    print("baselines: plain PyTorch loop (DataLoader, AdamW, forward, backward, step); "
          "greedy decoding without KV cache")
    for note in notes:
        print(note)
    return 0


def _generation(model: StoryGPT2, dataset: RecordDataset, device: torch.device,
                args: argparse.Namespace) -> tuple[tuple | None, str]:
    """Tokens/s of generate_stories (KV cache) and of the no-cache loop, as a table row."""
    model = model.to(device).eval()
    previous = model.lm.generation_config.min_new_tokens
    model.lm.generation_config.min_new_tokens = args.new_tokens  # eos suppressed: full length
    try:
        return _generation_timed(model, dataset, device, args)
    finally:
        # The model is shared with the other parts; a leftover constraint would send the
        # latency part's greedy decoding through generate() on both sides.
        model.lm.generation_config.min_new_tokens = previous


def _generation_timed(model: StoryGPT2, dataset: RecordDataset, device: torch.device,
                      args: argparse.Namespace) -> tuple[tuple | None, str]:
    settings = GenerationSettings(max_new_tokens=args.new_tokens)
    images = dataset.image_tensor(range(min(args.gen_batch, len(dataset)))).to(device)
    cached_ids = generate_token_ids(model, images, settings)  # warm-up and length check
    uncached_ids = generate_without_cache(model, images, args.new_tokens)
    if cached_ids.shape != (images.shape[0], args.new_tokens) or uncached_ids.shape != cached_ids.shape:
        return None, (f"error: expected {args.new_tokens} new tokens per image, got {tuple(cached_ids.shape)} "
                      f"(cache) and {tuple(uncached_ids.shape)} (no cache)")
    agreement = float((cached_ids.cpu() == uncached_ids.cpu()).float().mean())
    cache_times, nocache_times = [], []
    for _ in range(args.repeats):
        cache_times.append(_timed(lambda: generate_stories(model, images, settings), device)[0])
        nocache_times.append(_timed(lambda: model.tokenizer.batch_decode(
            generate_without_cache(model, images, args.new_tokens), skip_special_tokens=True), device)[0])
    tokens = images.shape[0] * args.new_tokens
    cache_tps = tokens / statistics.median(cache_times)
    nocache_tps = tokens / statistics.median(nocache_times)
    row = (f"generation tokens/s ({args.new_tokens} new, x{images.shape[0]})", cache_tps, nocache_tps,
           f"{cache_tps / nocache_tps:.1f}x", ">= 5x")
    note = (f"generation: {args.repeats} runs, median {statistics.median(cache_times):.3f} s (KV cache) vs "
            f"{statistics.median(nocache_times):.3f} s (no cache); tokens agreeing between the two: {agreement:.1%}")
    return row, note


def _latency(model: StoryGPT2, dataset: RecordDataset, device: torch.device,
             args: argparse.Namespace) -> tuple[tuple | None, str]:
    """Per-story latency at batch 1 through ``StoryTeller.tell``: generate() vs the lean loop, as a table row."""
    from PIL import Image

    from multimodal_lab.inference import StoryTeller

    teller = StoryTeller(model.eval(), device=device, batch_size=1)
    pixels = (dataset.image_tensor([0])[0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
    image = Image.fromarray(pixels)
    before = GenerationSettings(max_new_tokens=args.new_tokens, decoder="generate")  # the path before
    now = GenerationSettings(max_new_tokens=args.new_tokens)  # greedy: the lean loop
    slow_story, fast_story = teller.tell(image, before), teller.tell(image, now)  # warm-up and agreement
    if slow_story != fast_story:
        return None, f"error: the two decoders told different stories: {slow_story!r} vs {fast_story!r}"
    generate_times, lean_times = [], []
    for _ in range(max(args.repeats, 7)):
        generate_times.append(_timed(lambda: teller.tell(image, before), device)[0])
        lean_times.append(_timed(lambda: teller.tell(image, now), device)[0])
    slow, fast = statistics.median(generate_times), statistics.median(lean_times)
    words = len((fast_story if isinstance(fast_story, str) else fast_story[0]).split())
    row = ("story latency ms (batch 1)", fast * 1000, slow * 1000, f"{slow / fast:.1f}x", ">= 3x lower")
    which = f"trained model {args.model}" if args.model is not None else "untrained model"
    note = (f"latency: StoryTeller.tell on one image, {max(args.repeats, 7)} runs each, median {slow * 1000:.1f} ms "
            f"(generate) vs {fast * 1000:.1f} ms (lean loop); the same story ({words} words, at most "
            f"{args.new_tokens} tokens; {which})")
    return row, note


if __name__ == "__main__":
    sys.exit(main())
