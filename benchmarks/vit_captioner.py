"""vit_captioner decoding speed: batched beam search with the KV cache vs the tutorial's algorithm.

Usage::

    PYTHONPATH=src python benchmarks/vit_captioner.py                       # newest trained model
    PYTHONPATH=src python benchmarks/vit_captioner.py --model data/06_models/vit_captioner/model/<v>/model
    PYTHONPATH=src python benchmarks/vit_captioner.py --images 16 --repeats 1   # quick

Both contenders caption the same ``--images`` scene-world images with the same model at
``--beams`` beams, side by side in one process, alternating ``--repeats`` times (medians
reported), so machine load affects both alike:

* batched: ``ViTCaptioner.generate_ids`` — every image and beam in one batch, GPT-2's
  ``generate`` with its KV cache (each step runs one new token per beam);
* naive: ``generation.naive_beam.naive_caption_ids`` — the tutorial's algorithm: one
  image at a time, one beam at a time, the decoder re-run over the whole prefix at every
  step, no cache.

The script checks that both give the same captions (the target is all of them) and
prints captions/s and the ratio (target >= 20x). The model is the newest trained one
under ``data/06_models/vit_captioner/model`` (or ``--model``); without one, the default
config's model untrained (its captions are then noise, and the ratio still compares the
algorithms).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from machine import cpu_model  # benchmarks/ is the script's folder

ROOT = Path(__file__).resolve().parents[1]


def newest_model(folder: Path) -> Path | None:
    versions = sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
    return versions[-1] / "model" if versions else None


def load_or_build(model_dir: Path | None):
    from multimodal_lab.models.vit_captioner import ViTCaptioner, ViTCaptionerConfig

    if model_dir is not None:
        return ViTCaptioner.from_pretrained(model_dir).eval(), f"trained model {model_dir.parent.name}"
    import yaml

    from multimodal_lab.data.scene_world import SceneWorldConfig, generate_scene_world
    from multimodal_lab.data.vocab import VocabConfig, train_tokenizer

    params = yaml.safe_load((ROOT / "conf/base/parameters_vit_captioner.yml").read_text())["vit_captioner"]["model"]
    records = generate_scene_world(SceneWorldConfig(n_scenes=500, n_engravings=0, n_sequences=0))
    tokenizer = train_tokenizer(records["caption"].dropna().tolist(), VocabConfig(kind="word"))
    torch.manual_seed(0)
    return ViTCaptioner(ViTCaptionerConfig.from_dict(params), tokenizer).eval(), "untrained default model"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=None, help="a vit_captioner model directory")
    parser.add_argument("--images", type=int, default=64, help="test images captioned by both")
    parser.add_argument("--beams", type=int, default=5)
    parser.add_argument("--max-new-tokens", type=int, default=39)
    parser.add_argument("--length-penalty", type=float, default=0.0,
                        help="beam ranking exponent (0: the evaluated setting; 1: transformers' default)")
    parser.add_argument("--batch-size", type=int, default=64, help="images per batched call")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from multimodal_lab.data.record_dataset import decode_all
    from multimodal_lab.data.scene_world import SceneWorldConfig, generate_scene_world
    from multimodal_lab.generation.naive_beam import naive_caption_ids
    from multimodal_lab.generation.story import GenerationSettings
    from multimodal_lab.models.preprocess import arrays_to_tensor

    model_dir = args.model or newest_model(ROOT / "data/06_models/vit_captioner/model")
    model, what = load_or_build(model_dir)
    # Scenes of another seed than the default world: images no model has trained on.
    world = generate_scene_world(SceneWorldConfig(seed=12345, n_scenes=args.images, n_engravings=0, n_sequences=0,
                                                  bad_license_fraction=0.0, damaged_fraction=0.0))
    pixels = torch.from_numpy(decode_all(world["image"].tolist(), model.image_input))
    with torch.no_grad():
        features = model.encode(arrays_to_tensor(pixels))
    settings = GenerationSettings(strategy="beam", num_beams=args.beams, max_new_tokens=args.max_new_tokens,
                                  length_penalty=args.length_penalty)
    eos = model.tokenizer.eos_token_id

    def batched() -> list[list[int]]:
        out = []
        for start in range(0, features.shape[0], args.batch_size):
            ids = model.generate_ids(features[start:start + args.batch_size], settings)
            for row in ids.tolist():  # padded after eos: cut there (a hypothesis without eos hit the limit)
                out.append(row[:row.index(eos) + 1] if eos in row else row)
        return out

    def naive() -> list[list[int]]:
        return naive_caption_ids(model, features, num_beams=args.beams, max_new_tokens=args.max_new_tokens,
                                 length_penalty=args.length_penalty)

    times = {"batched": [], "naive": []}
    results = {}
    for _ in range(args.repeats):
        for name, function in (("batched", batched), ("naive", naive)):
            start = time.perf_counter()
            results[name] = function()
            times[name].append(time.perf_counter() - start)
    same = sum(a == b for a, b in zip(results["batched"], results["naive"]))
    batched_s, naive_s = statistics.median(times["batched"]), statistics.median(times["naive"])
    print(f"machine: {cpu_model()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}")
    print(f"model: {what}; {args.images} images, beam {args.beams}, at most {args.max_new_tokens} new tokens, "
          f"median of {args.repeats}")
    print(f"batched beam search + KV cache: {batched_s:8.2f} s  {args.images / batched_s:8.1f} captions/s")
    print(f"naive (per image, per beam, no cache): {naive_s:8.2f} s  {args.images / naive_s:8.2f} captions/s")
    print(f"speed-up: {naive_s / batched_s:.1f}x (target >= 20x); same captions: {same}/{args.images}")
    mean_len = statistics.mean(len(r) for r in results["batched"])
    print(f"mean caption length: {mean_len:.1f} tokens")
    print("example:", model.decode(torch.tensor([results['batched'][0]]))[0])
    return 0 if same == args.images else 1


if __name__ == "__main__":
    sys.exit(main())
