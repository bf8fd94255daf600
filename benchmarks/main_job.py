"""A family's whole pipeline, measured: ``kedro run --pipeline=story_gpt2`` (the main job) or another.

Usage::

    python benchmarks/main_job.py                      # seeds 0 1 2, each in a fresh project copy
    python benchmarks/main_job.py --seeds 0 --warm     # also a second run with the scene-world cache warm
    python benchmarks/main_job.py --params story_gpt2.train.num_processes=2   # any --params override
    python benchmarks/main_job.py --pipeline vit_captioner --seeds 0           # the captioner's pipeline

Each seed runs the README's first command's job (``kedro run --pipeline=story_gpt2``,
training seed set with ``--params``) as a subprocess in a fresh copy of the project's
configuration and source (empty ``data/``, its own ``mlflow.db``), so a run starts as on
a fresh clone: no cached scene world, no earlier versions. Dependencies are those of this
interpreter's environment (``pip install -e .``).

For every run it prints: wall time of the whole pipeline (process start to exit), the
time spent before training started, training time and steps/s, the peak memory of the
process tree (RSS summed over the processes alive at once, and PSS, which counts pages
forked workers share with their parent once; sampled every 0.25 s, so data-parallel and
data-preparation workers count; PSS every 2 s, since reading it costs CPU), the test metrics — pair F1 of the model, of its controls
(shuffled images, mean prefix) and of the nearest-neighbour baseline — and then the
mean and spread over seeds next to the family's bars (:data:`FAMILIES`): story_gpt2 wall
<= 300 s, peak RSS < 4 GiB, pair F1 >= 0.90 on every seed, shuffled control <= 0.1;
vit_captioner wall <= 480 s, peak RSS < 4 GiB, CIDEr-D >= 1.5x the nearest-neighbour
caption's, pair F1 >= 0.95, deranged control's pair F1 <= 0.1, beam 5 >= greedy.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
from machine import cpu_model  # benchmarks/ is the script's folder

# which way each metric is better, for the "best/<metric>" figure over a family's variants
from multimodal_lab.families.story_continuation import DIRECTION as BEST_DIRECTION
from multimodal_lab.families.story_continuation import VARIANTS

ROOT = Path(__file__).resolve().parents[1]
#: Per family: the figures printed (column -> metrics key) and the bars checked on every seed.
FAMILIES = {
    "story_gpt2": {
        "wall_bar": 300,
        "columns": {"pair F1": "test/pair_f1", "shuffled": "test/shuffled_images/pair_f1",
                    "mean pfx": "test/mean_prefix/pair_f1", "NN": "test/nearest_neighbour/pair_f1"},
        "bars": [("pair F1 >= 0.90", lambda m: m["test/pair_f1"] >= 0.90),
                 ("shuffled control <= 0.1", lambda m: m["test/shuffled_images/pair_f1"] <= 0.1)],
    },
    "vit_captioner": {
        "wall_bar": 480,
        "columns": {"CIDEr-D": "test/cider_d", "NN CIDEr": "baseline_nearest/cider_d",
                    "blind CIDEr": "baseline_blind/cider_d", "greedy": "greedy/cider_d", "beam3": "beam3/cider_d",
                    "BLEU-4": "test/bleu_4", "pair F1": "test/pair_f1", "deranged F1": "control_deranged/pair_f1"},
        "bars": [("CIDEr-D >= 1.5x nearest", lambda m: m["test/cider_d"] >= 1.5 * m["baseline_nearest/cider_d"]),
                 ("pair F1 >= 0.95", lambda m: m["test/pair_f1"] >= 0.95),
                 ("deranged pair F1 <= 0.1", lambda m: m["control_deranged/pair_f1"] <= 0.1),
                 ("beam 5 >= greedy on CIDEr-D", lambda m: m["beam5/cider_d"] >= m["greedy/cider_d"])],
    },
    "story_continuation": {
        "wall_bar": 600,
        "columns": {"best MAE": "best/image_mae", "copy MAE": "floor_copy_last/image_mae",
                    "best pos px": "best/position_error_px", "copy pos px": "floor_copy_last/position_error_px",
                    "best ppl": "best/perplexity", "text-only ppl": "floor_text_only/perplexity",
                    "best F1": "best/grounding_f1"},
        "bars": [("every variant beats copy-last and mean-image on MAE",
                  lambda m: all(m[f"{v}/image_mae"] < min(m["floor_copy_last/image_mae"], m["floor_mean_image/image_mae"])
                                for v in CONTINUATION_VARIANTS)),
                 ("best MAE <= 0.5x copy-last", lambda m: m["best/image_mae"] <= 0.5 * m["floor_copy_last/image_mae"]),
                 ("best position error <= 2 px", lambda m: m["best/position_error_px"] <= 2.0),
                 ("every variant's perplexity below the unigram and text-only floors",
                  lambda m: all(m[f"{v}/perplexity"] < min(m["floor_unigram/perplexity"], m["floor_text_only/perplexity"])
                                for v in CONTINUATION_VARIANTS)),
                 ("best grounding F1 >= 0.9", lambda m: m["best/grounding_f1"] >= 0.9)],
    },
}
#: story_continuation's image variants (the text-only floor aside)
CONTINUATION_VARIANTS = tuple(VARIANTS)

LAYERS = ("01_raw", "02_intermediate", "03_primary", "04_feature", "05_model_input", "06_models",
          "07_model_output", "08_reporting")


def project_copy(parent: Path) -> Path:
    """The project's configuration with empty data folders: a fresh clone's state."""
    root = parent / "project"
    root.mkdir()
    for name in ("pyproject.toml", ".telemetry"):
        shutil.copy(ROOT / name, root)
    shutil.copytree(ROOT / "conf", root / "conf", ignore=shutil.ignore_patterns("local"))
    (root / "conf" / "local").mkdir()
    # Kedro puts the project's source folder first on the path: the copy is the code that runs.
    shutil.copytree(ROOT / "src", root / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for layer in LAYERS:
        (root / "data" / layer).mkdir(parents=True)
    return root


def tree_memory(process: psutil.Process, with_pss: bool) -> tuple[int, int]:
    """Resident bytes (RSS) and proportional set size (PSS) of a process and its descendants.

    Summed RSS counts the pages that forked workers share with their parent once per
    process, so it overstates a tree's footprint; PSS splits shared pages between the
    processes that map them (Linux; elsewhere PSS is reported as RSS). Reading PSS walks
    every mapping, so it is only read when asked (0 otherwise).
    """
    rss = pss = 0
    for member in [process, *process.children(recursive=True)]:
        try:
            if with_pss:
                info = member.memory_full_info()
                pss += getattr(info, "pss", info.rss)
            else:
                info = member.memory_info()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        rss += info.rss
    return rss, pss


def newest(folder: Path) -> Path:
    versions = sorted(p for p in folder.iterdir() if p.is_dir())
    if not versions:
        raise FileNotFoundError(f"no version under {folder}")
    return versions[-1] / folder.name


def run_once(project: Path, seed: int, pipeline: str, log: Path, params: str = "") -> dict:
    """One ``kedro run`` in ``project``; its wall time, peak tree memory and outputs."""
    kedro = Path(sys.executable).with_name("kedro")
    overrides = ",".join(filter(None, [f"{pipeline}.train.seed={seed}", params]))
    command = [str(kedro), "run", f"--pipeline={pipeline}", f"--params={overrides}"]
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    started = time.perf_counter()
    with log.open("w") as output:
        process = subprocess.Popen(command, cwd=project, env=env, stdout=output, stderr=subprocess.STDOUT)
        watched = psutil.Process(process.pid)
        peak_rss = peak_pss = 0
        samples = 0
        while process.poll() is None:
            try:
                with_pss = samples % 8 == 0  # PSS every 2 s: reading it costs CPU
                rss, pss = tree_memory(watched, with_pss=with_pss)
                peak_pss = max(peak_pss, pss)
                samples += 1
            except psutil.NoSuchProcess:
                pass
            else:
                peak_rss = max(peak_rss, rss)
            time.sleep(0.25)
    wall = time.perf_counter() - started
    if process.returncode:
        raise RuntimeError(f"kedro run failed (exit {process.returncode}); see {log}")
    data = project / "data"
    metrics = json.loads(newest(data / f"08_reporting/{pipeline}/metrics.json").read_text())
    # one training history per trained model: the family's, or each variant's (<family>.<variant>)
    folders = sorted((data / "07_model_output").glob(f"{pipeline}.*")) or [data / f"07_model_output/{pipeline}"]
    trainings = [json.loads(newest(folder / "training.json").read_text()) for folder in folders]
    train_seconds = sum(float(t["train_seconds"]) for t in trainings)
    steps = sum(int(t["steps"]) for t in trainings)
    for metric, higher in BEST_DIRECTION.items():
        values = [metrics[key] for key in (f"{v}/{metric}" for v in CONTINUATION_VARIANTS) if key in metrics]
        if values:
            metrics[f"best/{metric}"] = max(values) if higher else min(values)
    return {
        "seed": seed,
        "wall_s": wall,
        "train_s": train_seconds,
        "steps": steps,
        "steps_per_s": steps / train_seconds if train_seconds else float("nan"),
        "best_step": trainings[0].get("best_step") if len(trainings) == 1 else None,
        "peak_rss_gib": peak_rss / 2**30,
        "peak_pss_gib": peak_pss / 2**30,
        "metrics": metrics,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds, one run each")
    parser.add_argument("--pipeline", default="story_gpt2")
    parser.add_argument("--warm", action="store_true", help="a second run per seed with the scene-world cache warm")
    parser.add_argument("--keep", type=Path, default=None, help="keep the project copies and logs under this folder")
    parser.add_argument("--params", default="", help="more kedro --params overrides, e.g. story_gpt2.train.num_processes=2")
    args = parser.parse_args(argv)

    print(f"main job benchmark: {cpu_model()}, {os.cpu_count()} CPU cores, "
          f"{psutil.virtual_memory().total / 2**30:.0f} GiB, Python {platform.python_version()}")
    rows = []
    base = args.keep or Path(tempfile.mkdtemp(prefix="main-job-"))
    base.mkdir(parents=True, exist_ok=True)
    try:
        for seed in args.seeds:
            parent = base / f"seed{seed}"
            parent.mkdir()
            project = project_copy(parent)
            runs = [("cold", parent / "cold.log")] + ([("warm", parent / "warm.log")] if args.warm else [])
            for label, log in runs:
                row = run_once(project, seed, args.pipeline, log, args.params) | {"cache": label}
                rows.append(row)
                shown = {k: round(v, 4) if isinstance(v, float) else v for k, v in row.items() if k != "metrics"}
                shown.update({key: round(row["metrics"].get(key, float("nan")), 4)
                              for key in FAMILIES.get(args.pipeline, {}).get("columns", {}).values()})
                print(json.dumps(shown), flush=True)
    finally:
        if args.keep is None:
            shutil.rmtree(base, ignore_errors=True)

    spec = FAMILIES.get(args.pipeline, {"wall_bar": None, "columns": {}, "bars": []})
    columns = spec["columns"]
    header = (f"{'seed':>4} {'cache':>5} {'wall s':>7} {'before train s':>14} {'train s':>8} {'steps':>6} "
              f"{'steps/s':>7} {'RSS GiB':>8} {'PSS GiB':>8} " + " ".join(f"{c:>11}" for c in columns))
    print()
    print(header)
    for r in rows:
        values = " ".join(f"{r['metrics'].get(key, float('nan')):>11.3f}" for key in columns.values())
        print(f"{r['seed']:>4} {r['cache']:>5} {r['wall_s']:>7.0f} {r['wall_s'] - r['train_s']:>14.0f} "
              f"{r['train_s']:>8.0f} {r['steps']:>6} {r['steps_per_s']:>7.2f} {r['peak_rss_gib']:>8.2f} "
              f"{r['peak_pss_gib']:>8.2f} {values}")
    cold = [r for r in rows if r["cache"] == "cold"]
    print()
    for name, key in columns.items():
        values = [r["metrics"].get(key, float("nan")) for r in cold]
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        print(f"{name} over {len(values)} seed(s): mean {statistics.mean(values):.3f}, sd {spread:.3f}, "
              f"min {min(values):.3f}, max {max(values):.3f}")
    for name, check in spec["bars"]:
        met = all(check(r["metrics"]) for r in cold)
        print(f"bar {name} on every seed: {'met' if met else 'NOT met'}")
    for r in cold:  # a family's best variants trained again with other seeds (params:<family>.compare)
        repeated = sorted({key.split("/seed")[0] for key in r["metrics"] if "/seed" in key})
        for variant in repeated:
            seeds = sorted({key.split("/seed")[1].split("/")[0] for key in r["metrics"]
                            if key.startswith(f"{variant}/seed")})
            figures = "; ".join(f"seed {s}: " + ", ".join(
                f"{name} {r['metrics'].get(f'{variant}/seed{s}/{metric}', float('nan')):.4g}"
                for name, metric in (("MAE", "image_mae"), ("pos px", "position_error_px"),
                                     ("ppl", "perplexity"), ("F1", "grounding_f1"))) for s in seeds)
            print(f"run seed {r['seed']}, {variant} trained again: {figures}")
    worst_wall = max(r["wall_s"] for r in cold)
    if spec["wall_bar"] is not None:
        print(f"wall time (cold): max {worst_wall:.0f} s (bar <= {spec['wall_bar']} s: "
              f"{'met' if worst_wall <= spec['wall_bar'] else 'NOT met'})")
    worst_rss = max(r["peak_rss_gib"] for r in rows)
    worst_pss = max(r["peak_pss_gib"] for r in rows)
    print(f"peak memory of the process tree: RSS summed {worst_rss:.2f} GiB, PSS {worst_pss:.2f} GiB "
          f"(bar < 4 GiB: {'met' if worst_rss < 4 else 'NOT met'} on the summed RSS, which overcounts shared pages)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
