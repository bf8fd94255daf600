"""The seed_vae baseline, measured: trained on real engravings, sampled from the prior, judged.

Usage::

    PYTHONPATH=src python benchmarks/art_seed_vae.py                 # 1,200 steps, 1,000 seeds (~5 min)
    PYTHONPATH=src python benchmarks/art_seed_vae.py --steps 200 --samples 200   # quick

Renders 5,000 scene-world engravings with their captions (seed 0) and 1,000 held-out ones
(seed 1); builds the corpus kind of word tokenizer from the training captions; trains the default
``SeedVAEConfig`` (Adam, batches of 64) and the judge (default ``ArtJudgeConfig``) on the
training engravings; generates seeds 0 .. ``--samples``-1 and prints every art score of
``evaluation/art.py`` against the held-out engravings, with the real-vs-real line: the
baseline alone, longer than the pipeline trains it (docs/art_generator.md, "The seed_vae
baseline").
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from machine import cpu_model  # benchmarks/ is the script's folder

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from multimodal_lab.data.vocab import VocabConfig, train_tokenizer  # noqa: E402
from multimodal_lab.evaluation import art  # noqa: E402
from multimodal_lab.models.art_generator import SeedVAE, SeedVAEConfig  # noqa: E402
from multimodal_lab.models.art_judge import ArtJudgeConfig, train_judge  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=5000)
    parser.add_argument("--test", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"seed_vae: {cpu_model()}, {args.threads} threads, torch {torch.__version__}")
    images, objects, captions = art.real_engravings(args.train, 0, 64)
    test_images, test_objects, _ = art.real_engravings(args.test, 1, 64)
    tokenizer = train_tokenizer(captions, VocabConfig(kind="word"))  # the corpus tokenizer's kind
    encoded = tokenizer([c.lower() for c in captions], padding=True, return_tensors="pt")
    pixels = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    torch.manual_seed(0)
    model = SeedVAE(SeedVAEConfig(), tokenizer)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    generator = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    for step in range(args.steps):
        index = torch.randint(0, len(pixels), (64,), generator=generator)
        out = model(pixels[index], encoded["input_ids"][index], encoded["attention_mask"][index], generator=generator)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        if step % 200 == 0 or step == args.steps - 1:
            print(f"step {step}: " + ", ".join(f"{k} {float(getattr(out, k)):.4f}" for k in ("loss", "mse", "caption_ce", "kl")),
                  flush=True)
    train_s = time.perf_counter() - start
    samples, sample_captions = model.generate(list(range(args.samples)))
    judge, _ = train_judge(images, objects, ArtJudgeConfig(), log_every=0)
    seen = judge.read(samples)
    result = {
        "train_s": round(train_s, 1), "steps": args.steps, "samples": args.samples,
        **art.agreement_scores(sample_captions, seen),
        "agreement_shuffled": art.shuffled_agreement(sample_captions, seen),
        **art.image_scores(samples), **art.caption_population_scores(sample_captions, test_objects),
        **art.judge_fid(judge, test_images, samples),
        "real_vs_real": art.real_vs_real(judge, test_images),
        "judge_test_set_accuracy": float(np.mean([r == t for r, t in zip(judge.read(test_images), test_objects)])),
        "mean_brightness": float(samples.mean() / 255), "real_mean_brightness": float(test_images.mean() / 255),
        "first_captions": sample_captions[:3],
    }
    print(json.dumps(result, indent=2, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
