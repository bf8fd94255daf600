"""The evaluation harness: a model, its controls and its baselines, scored side by side.

A model can reach a low loss while ignoring its input (scene texts share templates, so
a language model alone writes fluent, plausible text). Every family is therefore scored
under several *conditions* on the same records with the same decoding:

* ``model``: each record with its own input;
* controls, the same model with its input broken:
  - ``deranged``: each record gets another record's conditioning (a seeded
    derangement, so no record keeps its own);
  - ``mean_train``: every record gets the mean conditioning of training records
    (a null input that stays in distribution);
  - ``zeroed``: the conditioning is all zeros (out of distribution; proves little);
* baselines that use no model at all, e.g. ``nearest_neighbour``: the text of the
  training record whose image is closest in pixel space;
* other decodings of the model (``EvalSettings.decodings``, e.g. greedy next to beam
  search): the model with its own input, decoded another way.

A family plugs in through a small *conditioner* (see :class:`Conditioner`): it turns
records into a conditioning tensor (the story model's image prefix, a captioner's patch
features), writes texts from a conditioning and scores reference texts under one.
Controls then act on conditioning tensors, so every family gets them for free.
"""
from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from multimodal_lab.evaluation.suites import MetricSuite, get_suite
from multimodal_lab.evaluation.text import perplexity
from multimodal_lab.generation.story import GenerationSettings
from multimodal_lab.models.preprocess import decode_image, image_to_array

logger = logging.getLogger(__name__)

OPERATIONS = ("deranged", "zeroed", "mean_train")
KINDS = ("model", "control", "baseline", "decoding")


@dataclass(frozen=True)
class Control:
    """A control condition: the model with its conditioning replaced."""

    name: str  # condition name in tables and metric keys, e.g. "shuffled_images"
    operation: str  # "deranged", "zeroed" or "mean_train" (see the module docstring)
    description: str  # one sentence for the report

    def __post_init__(self) -> None:
        if self.operation not in OPERATIONS:
            raise ValueError(f"control operation {self.operation!r} is unknown; use one of {OPERATIONS}")


@dataclass(frozen=True)
class Baseline:
    """A condition that writes texts without the model, from the training records."""

    name: str  # condition name, e.g. "nearest_neighbour"
    description: str  # one sentence for the report
    # (train_records, test_records, settings) -> one text per test record
    generate: Callable[[pd.DataFrame, pd.DataFrame, EvalSettings], list[str]]


@dataclass
class EvalSettings:
    """How a family is evaluated."""

    batch_size: int = 32  # records per conditioning / generation / scoring batch
    max_records: int | None = None  # evaluate a seeded random subset of this size (None = all)
    seed: int = 0  # seeds the subset, the derangement and the records averaged for mean_train
    num_samples: int = 24  # records kept with their outputs for the report
    text_column: str = "story"  # the reference text: scored for perplexity, shown in the report
    controls: list[str] = field(default_factory=list)  # control names to run (the family's defaults when empty)
    baselines: list[str] = field(default_factory=list)  # baseline names to run
    null_records: int = 512  # training records whose mean conditioning is the mean_train input
    baseline_records: int = 5000  # training records a baseline may draw from (seeded subset)
    show_progress: bool = True  # tqdm progress bar over records
    device: str | None = None  # "cpu", "cuda", "auto" (cuda when available); None = where the model is
    generation: GenerationSettings = field(default_factory=GenerationSettings)  # decoding
    # more decodings of the model, each scored as its own condition: name -> GenerationSettings
    # fields (e.g. {"greedy": {"strategy": "greedy"}}); unset fields come from ``generation``
    decodings: dict[str, GenerationSettings] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.generation, Mapping):
            self.generation = GenerationSettings(**self.generation)
        base = dataclasses.asdict(self.generation)
        self.decodings = {
            str(name): value if isinstance(value, GenerationSettings) else GenerationSettings(**{**base, **value})
            for name, value in dict(self.decodings).items()
        }
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.max_records is not None and self.max_records < 1:
            raise ValueError(f"max_records must be >= 1 or None (all records), got {self.max_records}")
        for key in ("num_samples", "null_records", "baseline_records"):
            if getattr(self, key) < 0:
                raise ValueError(f"{key} must be >= 0, got {getattr(self, key)}")
        self.controls = list(self.controls)
        self.baselines = list(self.baselines)

    def resolve_device(self, home: torch.device) -> torch.device:
        if self.device is None:
            return home
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)


class Conditioner(Protocol):
    """What a family gives the harness (built around a trained model)."""

    def condition(self, records: pd.DataFrame) -> torch.Tensor:
        """Conditioning of each record, (B, ...) on the model's device."""

    def generate(self, conditioning: torch.Tensor, settings: GenerationSettings | None = None) -> list[str]:
        """One text per conditioning row (decoded with ``settings``; None = the evaluation's own).

        Must be a function of its arguments (sampling seeded per call): the harness decodes a
        batch of a constant control once and reuses the texts for every batch of that size.
        """

    def score(self, conditioning: torch.Tensor, records: pd.DataFrame) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed NLL and token count of each record's reference text under its conditioning, (B,) each.

        Records without a reference text score 0 tokens.
        """


class ImageTextConditioner:
    """The shared half of an image -> text family's conditioner.

    It decodes record images the model's way (``images``) and scores reference texts under
    any conditioning (``score``: ``bos text eos`` through the model's
    ``text_logits(conditioning, input_ids, attention_mask)``). A family subclass adds
    ``condition`` and ``generate`` and may override ``reference_texts`` (default: the
    settings' text column).
    """

    max_tokens: int = 64  # longest scored text in tokens, bos and eos included (set by the subclass)

    def __init__(self, model: torch.nn.Module, settings: EvalSettings, device: torch.device) -> None:
        self.model = model
        self.settings = settings
        self.device = device

    def images(self, records: pd.DataFrame) -> torch.Tensor:
        from multimodal_lab.data.record_dataset import decode_all
        from multimodal_lab.models.preprocess import arrays_to_tensor

        pixels = decode_all(records["image"].tolist(), self.model.image_input)
        return arrays_to_tensor(torch.from_numpy(pixels)).to(self.device)  # (B, 3, S, S)

    def reference_texts(self, records: pd.DataFrame) -> list:
        return records[self.settings.text_column].tolist()

    def score(self, conditioning: torch.Tensor, records: pd.DataFrame) -> tuple[torch.Tensor, torch.Tensor]:
        from multimodal_lab.data.record_dataset import encode_texts, pad_texts
        from multimodal_lab.evaluation.text import sequence_nll

        nll = torch.zeros(len(records), dtype=torch.float64)
        count = torch.zeros(len(records), dtype=torch.int64)
        texts = self.reference_texts(records)
        scored = [i for i, text in enumerate(texts) if isinstance(text, str) and text.strip()]
        if not scored:
            return nll, count
        tokenizer = self.model.tokenizer
        ids = encode_texts([texts[i] for i in scored], tokenizer, self.max_tokens)
        batch = {k: v.to(self.device) for k, v in pad_texts([torch.tensor(t) for t in ids],
                                                             tokenizer.pad_token_id).items()}
        logits = self.model.text_logits(conditioning[scored], batch["input_ids"], batch["attention_mask"])
        part_nll, part_count = sequence_nll(logits, batch["labels"])
        nll[scored], count[scored] = part_nll.cpu(), part_count.cpu()
        return nll, count


@dataclass
class Evaluation:
    """What :func:`evaluate` measured."""

    metrics: pd.DataFrame  # one row per condition: "condition", "kind", then metric columns
    samples: list[dict[str, Any]]  # kept records: images, reference, outputs and notes per condition
    summary: dict[str, float]  # flat metrics for MLflow ("test/pair_f1", "test/shuffled_images/pair_f1", ...)
    conditions: list[dict[str, str]]  # name, kind and description of each condition, in table order
    split: str = "test"  # the split the records came from (prefix of the summary keys)
    notes: list[str] = field(default_factory=list)  # remarks the report shows under the metrics


def seeded_derangement(n: int, seed: int) -> np.ndarray:
    """A random permutation of range(n) with no fixed point (perm[i] != i for all i).

    A uniform permutation is drawn, then every fixed point i is swapped with a random
    other position j: afterwards perm[i] is the old perm[j] (not i, since i already sat
    at i) and perm[j] is i (not j), so each swap removes a fixed point without creating
    one and a single pass suffices.

    Args:
        n: number of items, at least 2 (one item cannot be moved).
        seed: seed of the draw; the same (n, seed) gives the same permutation.

    Returns:
        int64 array of shape (n,).
    """
    if n < 2:
        raise ValueError(f"a derangement needs at least 2 items, got n={n}")
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    for i in range(n):
        if perm[i] == i:
            j = int(rng.integers(n - 1))
            j = j + 1 if j >= i else j  # uniform over positions other than i
            perm[i], perm[j] = perm[j], perm[i]
    return perm.astype(np.int64)


def select_records(records: pd.DataFrame, max_records: int | None, seed: int) -> pd.DataFrame:
    """A seeded random subset of ``max_records`` rows in their original order (all when None)."""
    if max_records is None or len(records) <= max_records:
        return records
    rng = np.random.default_rng(seed)
    keep = np.sort(rng.choice(len(records), size=max_records, replace=False))
    return records.iloc[keep]


def _batches(n: int, size: int) -> list[range]:
    return [range(start, min(start + size, n)) for start in range(0, n, size)]


def _conditioning(conditioner: Conditioner, records: pd.DataFrame, batch_size: int) -> torch.Tensor:
    parts = [conditioner.condition(records.iloc[rows.start:rows.stop]) for rows in _batches(len(records), batch_size)]
    return torch.cat(parts)


def evaluate(
    conditioner: Conditioner,
    records: pd.DataFrame,
    settings: EvalSettings,
    *,
    controls: Sequence[Control] = (),
    baselines: Sequence[Baseline] = (),
    suites: Sequence[str | MetricSuite] = ("diversity",),
    train_records: pd.DataFrame | None = None,
    split: str = "test",
    headline: str | None = None,
) -> Evaluation:
    """Score the model and its controls and baselines on ``records``.

    Args:
        conditioner: the family's adapter around a model in eval mode on its device.
        records: the evaluated record frame (``record_id``, ``image``, the text column,
            ``metadata``); not modified.
        settings: evaluation settings.
        controls: control conditions to run.
        baselines: baselines to run (they need ``train_records``).
        suites: metric suites (names or objects) applied to every condition's texts.
        train_records: training records, for ``mean_train`` controls and baselines.
        split: name of the split the records come from (prefixes the summary keys).
        headline: the metric whose margin over every other condition goes into the
            summary (``<split>/<headline>_margin/<condition>``).

    Returns:
        An :class:`Evaluation`.
    """
    for column in ("record_id", "image", "metadata", settings.text_column):
        if column not in records.columns:
            raise ValueError(f"the evaluated records lack the column {column!r}; pass a record frame (data.records)")
    chosen = select_records(records, settings.max_records, settings.seed).reset_index(drop=True)
    n = len(chosen)
    if n == 0:
        raise ValueError("evaluate got no records; check the split and max_records")
    suites = [get_suite(s) if isinstance(s, str) else s for s in suites]
    controls = list(controls)
    if any(c.operation == "deranged" for c in controls) and n < 2:
        logger.warning("one record cannot be deranged; the deranged controls are skipped")
        controls = [c for c in controls if c.operation != "deranged"]
    needs_train = [c.name for c in controls if c.operation == "mean_train"] + [b.name for b in baselines]
    if needs_train and (train_records is None or train_records.empty):
        raise ValueError(f"conditions {needs_train} need the training records; pass train_records")
    perm = seeded_derangement(n, settings.seed) if n >= 2 else np.arange(n)
    batches = _batches(n, settings.batch_size)

    progress = tqdm(total=n * (1 + len(controls)), desc="evaluating", unit="record",
                    disable=not settings.show_progress)
    own = _conditioning(conditioner, chosen, settings.batch_size)  # (n, ...)
    inputs: dict[str, torch.Tensor] = {"model": own}
    sources: dict[str, list[str]] = {}
    ids = chosen["record_id"].astype(str).tolist()
    for control in controls:
        if control.operation == "deranged":
            inputs[control.name] = own[torch.as_tensor(perm, device=own.device)]
            sources[control.name] = [ids[int(j)] for j in perm]
        elif control.operation == "zeroed":
            inputs[control.name] = torch.zeros_like(own)
        else:
            subset = select_records(train_records, settings.null_records, settings.seed)
            mean = _conditioning(conditioner, subset, settings.batch_size).mean(dim=0, keepdim=True)
            inputs[control.name] = mean.expand_as(own).contiguous()

    # every row of a zeroed or mean-image control is the same input: one batch of each size is decoded
    constant = {c.name for c in controls if c.operation in ("zeroed", "mean_train")}
    decoded: dict[tuple[str, int], list[str]] = {}
    texts: dict[str, list[str]] = {name: [] for name in [*inputs, *settings.decodings]}
    nll: dict[str, float] = dict.fromkeys(inputs, 0.0)
    tokens: dict[str, int] = dict.fromkeys(inputs, 0)
    progress.total += n * len(settings.decodings)
    try:
        for rows in batches:
            part = chosen.iloc[rows.start:rows.stop]
            for name, conditioning in inputs.items():
                if name in constant and (name, len(rows)) in decoded:
                    texts[name].extend(decoded[name, len(rows)])
                else:
                    texts[name].extend(conditioner.generate(conditioning[rows.start:rows.stop]))
                    if name in constant:
                        decoded[name, len(rows)] = texts[name][-len(rows):]
                batch_nll, count = conditioner.score(conditioning[rows.start:rows.stop], part)
                nll[name] += float(batch_nll.sum())
                tokens[name] += int(count.sum())
                progress.update(len(rows))
            for name, decoding in settings.decodings.items():
                texts[name].extend(conditioner.generate(own[rows.start:rows.stop], decoding))
                progress.update(len(rows))
    finally:
        progress.close()
    for baseline in baselines:
        pool = select_records(train_records, settings.baseline_records, settings.seed)
        texts[baseline.name] = list(baseline.generate(pool, chosen, settings))

    conditions = [{"name": "model", "kind": "model", "description": "the model, each record with its own input"}]
    conditions += [{"name": c.name, "kind": "control", "description": c.description} for c in controls]
    conditions += [{"name": b.name, "kind": "baseline", "description": b.description} for b in baselines]
    conditions += [{"name": name, "kind": "decoding", "description": f"the model decoded with {describe_decoding(d)}"}
                   for name, d in settings.decodings.items()]
    clash = {c["name"] for c in conditions if [d["name"] for d in conditions].count(c["name"]) > 1}
    if clash:
        raise ValueError(f"condition names {sorted(clash)} are used twice (controls, baselines and decodings "
                         "must have distinct names)")
    rows_out, notes = [], {}
    for condition in conditions:
        name = condition["name"]
        row: dict[str, Any] = {"condition": name, "kind": condition["kind"]}
        for suite in suites:
            result = suite.score(texts[name], chosen)
            row.update(result.metrics)
            if result.notes is not None:
                notes.setdefault(name, []).append(result.notes)
        row["perplexity"] = perplexity(nll[name], tokens[name]) if name in nll else math.nan
        row["num_records"] = float(n)
        rows_out.append(row)
    columns = ["condition", "kind", *[c for s in suites for c in s.columns], "perplexity", "num_records"]
    metrics = pd.DataFrame(rows_out, columns=columns)
    reference_notes = [suite.reference_notes(chosen) for suite in suites]
    samples = _samples(chosen, settings, texts, notes, reference_notes, sources)
    return Evaluation(metrics=metrics, samples=samples, summary=summarize(metrics, split, headline),
                      conditions=conditions, split=split)


def pick_conditions(family: str, settings: EvalSettings, controls: Mapping[str, Control],
                    baselines: Mapping[str, Baseline]) -> tuple[list[Control], list[Baseline]]:
    """The controls and baselines ``settings`` names, from a family's tables.

    Raises:
        ValueError: a name the family does not have, listing the ones it has.
    """
    unknown = [c for c in settings.controls if c not in controls] + [b for b in settings.baselines if b not in baselines]
    if unknown:
        raise ValueError(f"unknown controls/baselines {unknown}; {family} has controls {sorted(controls)} "
                         f"and baselines {sorted(baselines)}")
    return [controls[c] for c in settings.controls], [baselines[b] for b in settings.baselines]


class evaluation_mode:  # noqa: N801 - used as a context manager, named like one
    """``with evaluation_mode(model, settings) as device:`` the model in eval mode on the
    evaluation's device; handed back where and as it came (train/eval) afterwards."""

    def __init__(self, model: torch.nn.Module, settings: EvalSettings) -> None:
        self.model = model
        self.home = next(model.parameters()).device
        self.device = settings.resolve_device(self.home)
        self.was_training = model.training

    def __enter__(self) -> torch.device:
        self.model.to(self.device).eval()
        return self.device

    def __exit__(self, *exc: object) -> None:
        self.model.to(self.home).train(self.was_training)


def describe_decoding(settings: GenerationSettings) -> str:
    """A few words for a decoding: "greedy search", "beam search (5 beams)", "sampling (T=0.8)"."""
    if settings.strategy == "beam":
        return f"beam search ({settings.num_beams} beams)"
    if settings.strategy == "sample":
        return f"sampling (temperature {settings.temperature}, top-k {settings.top_k}, top-p {settings.top_p})"
    return "greedy search"


def summarize(metrics: pd.DataFrame, split: str, headline: str | None = None) -> dict[str, float]:
    """Flat metric keys: ``<split>/<metric>`` for the model, ``<split>/<condition>/<metric>`` otherwise.

    With a ``headline`` metric, its margin over each other condition is added as
    ``<split>/<headline>_margin/<condition>`` (model minus condition), and the model's
    perplexity ratio to each control as ``<split>/perplexity_ratio/<condition>``
    (> 1 when the true input makes the reference text more likely).
    """
    table = metrics.set_index("condition")
    values = [c for c in table.columns if c != "kind"]
    summary: dict[str, float] = {}
    for name in table.index:
        prefix = split if name == "model" else f"{split}/{name}"
        for column in values:
            summary[f"{prefix}/{column}"] = float(table.at[name, column])
    for name in table.index:
        if name == "model":
            continue
        if headline is not None:
            summary[f"{split}/{headline}_margin/{name}"] = float(table.at["model", headline] - table.at[name, headline])
        if "perplexity" not in table.columns:
            continue
        ppl = float(table.at["model", "perplexity"])
        other = float(table.at[name, "perplexity"])
        if not (math.isnan(ppl) or math.isnan(other)) and ppl > 0:
            summary[f"{split}/perplexity_ratio/{name}"] = other / ppl
    return summary


def _samples(records: pd.DataFrame, settings: EvalSettings, texts: dict[str, list[str]],
             notes: dict[str, list[list[str]]], reference_notes: list[list[str] | None],
             sources: dict[str, list[str]]) -> list[dict[str, Any]]:
    samples = []
    for i in range(min(settings.num_samples, len(records))):
        reference = records.at[i, settings.text_column]
        truth = "; ".join(n[i] for n in reference_notes if n is not None and n[i])
        samples.append(
            {
                "record_id": str(records.at[i, "record_id"]),
                "images": [bytes(records.at[i, "image"])],
                "reference": reference if isinstance(reference, str) else None,
                "reference_note": truth,
                "outputs": {name: values[i] for name, values in texts.items()},
                "notes": {name: "; ".join(n[i] for n in lists if n[i]) for name, lists in notes.items()},
                "inputs_from": {name: values[i] for name, values in sources.items()},
            }
        )
    return samples


def pixel_thumbnails(images: Sequence[bytes], side: int = 16) -> np.ndarray:
    """Images as flat float vectors of ``side`` x ``side`` RGB thumbnails, (N, side*side*3)."""
    return np.stack([image_to_array(decode_image(b), side).reshape(-1) for b in images]).astype(np.float32)


def nearest_neighbour_texts(pool: pd.DataFrame, records: pd.DataFrame, text_column: str,
                            side: int = 16) -> list[str]:
    """For each record, the text of the ``pool`` record whose thumbnail is nearest (L2).

    A retrieval baseline: it reads the image, but only through raw pixel similarity,
    so beating it shows that a model composes what it sees instead of recalling a
    look-alike.
    """
    pool = pool[pool[text_column].notna()]
    if pool.empty:
        raise ValueError(f"the nearest-neighbour baseline has no training record with a {text_column!r}")
    keys = torch.from_numpy(pixel_thumbnails(pool["image"].tolist(), side))
    queries = torch.from_numpy(pixel_thumbnails(records["image"].tolist(), side))
    nearest = torch.cdist(queries, keys).argmin(dim=1).tolist()
    texts = pool[text_column].astype(str).tolist()
    return [texts[j] for j in nearest]


def samples_for_json(samples: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Samples without their image bytes and figures, JSON-safe (NaN -> None), for a JSON dataset."""
    return [json_safe({k: v for k, v in sample.items() if k not in ("images", "figures")}) for sample in samples]


def json_safe(value: Any) -> Any:
    """Recursively make ``value`` JSON-serialisable: NaN -> None, numpy scalars -> Python."""
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [json_safe(v) for v in value]
    if isinstance(value, float) and value != value:
        return None
    if hasattr(value, "item") and not isinstance(value, (bytes, str)):
        return json_safe(value.item())
    return value
