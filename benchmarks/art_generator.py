"""art_generator sampling speed: batched generation vs one seed at a time (the write-up's loop).

Usage::

    PYTHONPATH=src python benchmarks/art_generator.py                       # 1,000 seeds, seed_vae
    PYTHONPATH=src python benchmarks/art_generator.py --seeds 200 --repeats 3
    PYTHONPATH=src python benchmarks/art_generator.py --model data/06_models/<...>/model

Both contenders generate the same ``--seeds`` seeds (0 .. n-1) with the same model, side by
side in one process, alternating ``--repeats`` times (medians reported), so machine load
affects both alike:

* batched: ``generate(seeds)`` in calls of ``--batch`` seeds (the model decodes them in
  fixed chunks of 64, which keeps every sample byte-identical whatever the batch);
* the write-up's loop: one latent at a time through the decoders (a batch of 1).

It prints samples/s and the ratio, and how many seeds the loop draws differently, byte for
byte, from the batched API (a matrix product over one row rounds differently from one over
many). It also checks the API against itself: ``generate([seed])`` for ``--check`` seeds must
give the batched bytes and captions (exit status 1 otherwise). The model is ``--model`` (a
saved seed_vae directory) or, without one, the default ``SeedVAEConfig`` untrained with a
small word tokenizer: its samples are then noise, and the ratio still compares the two ways
of sampling.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from machine import cpu_model  # benchmarks/ is the script's folder

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from multimodal_lab.models.art_generator import SeedVAE, SeedVAEConfig, latents_for_seeds  # noqa: E402


def untrained_model() -> SeedVAE:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["an", "old", "print", "of", "a", "small", "medium", "large", "star", "ring", "circle", "square",
             "and", "in", "field", "."]
    vocab = {token: i for i, token in enumerate(["<pad>", "<bos>", "<eos>", "<unk>", *words])}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", bos_token="<bos>",
                                        eos_token="<eos>", unk_token="<unk>")
    torch.manual_seed(0)
    return SeedVAE(SeedVAEConfig(), tokenizer).eval()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="a saved seed_vae directory")
    parser.add_argument("--seeds", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=250)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--check", type=int, default=20, help="seeds generated alone against the batched bytes")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = SeedVAE.from_pretrained(args.model) if args.model else untrained_model()
    seeds = list(range(args.seeds))
    print(f"machine: {cpu_model()}, {args.threads} torch threads, torch {torch.__version__}")
    print(f"model: {'seed_vae from ' + str(args.model) if args.model else 'untrained default seed_vae'}; "
          f"{args.seeds} seeds, batches of {args.batch}, median of {args.repeats}")

    def batched() -> tuple[np.ndarray, list[str]]:
        parts = [model.generate(seeds[i:i + args.batch]) for i in range(0, len(seeds), args.batch)]
        return np.concatenate([p[0] for p in parts]), [c for p in parts for c in p[1]]

    @torch.no_grad()
    def one_at_a_time() -> tuple[np.ndarray, list[str]]:
        latents = latents_for_seeds(seeds, model.config.latent_dim)
        images, captions = [], []
        for z in latents:
            image, logits = model.decode(z[None])
            images.append(image.mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy())
            captions.append(model._caption(logits[0].argmax(dim=-1).tolist()))
        return np.concatenate(images), captions

    times: dict[str, list[float]] = {"batched": [], "write-up loop": []}
    outputs = {}
    for _ in range(args.repeats):
        for name, run in (("batched", batched), ("write-up loop", one_at_a_time)):
            start = time.perf_counter()
            outputs[name] = run()
            times[name].append(time.perf_counter() - start)
    rates = {name: args.seeds / statistics.median(t) for name, t in times.items()}
    for name, rate in rates.items():
        print(f"{name:>14}: {statistics.median(times[name]):7.2f} s  {rate:9.1f} samples/s")
    print(f"ratio batched / write-up loop: {rates['batched'] / rates['write-up loop']:.1f}x")
    images, captions = outputs["batched"]
    loop_images, loop_captions = outputs["write-up loop"]
    differ = [s for s in seeds if images[s].tobytes() != loop_images[s].tobytes() or captions[s] != loop_captions[s]]
    print(f"seeds the write-up loop draws differently (bytes or caption): {len(differ)} of {len(seeds)} {differ[:8]}")
    step = max(1, len(seeds) // max(1, args.check))
    checked = seeds[::step][:args.check] + differ[:args.check]
    alone = {s: model.generate([s]) for s in checked}
    broken = [s for s in checked if alone[s][0][0].tobytes() != images[s].tobytes() or alone[s][1][0] != captions[s]]
    print(f"generate([seed]) against the batched bytes and captions, {len(checked)} seeds: "
          f"{'identical' if not broken else f'{len(broken)} differ: {broken[:8]}'}")
    return 0 if not broken else 1


if __name__ == "__main__":
    raise SystemExit(main())
