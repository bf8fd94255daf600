"""One training loop for every model of the project.

``train`` takes any ``nn.Module`` whose ``model(**batch)`` returns an object with a
``.loss``, plus datasets and a collate function, and does the rest: AdamW with decay
only on weight matrices, warm-up then cosine/linear decay, gradient accumulation and
clipping, bf16 autocast on a GPU (device placement through ``accelerate``), periodic
validation with early stopping that restores the best weights, atomic checkpoints that
resume bit-for-bit, live metrics through a callback, and a progress bar.

Model selection: at every evaluation the loop computes the validation loss and, when the
caller gives a ``validate`` function, task metrics (the story family decodes a fixed
validation subset and scores its grounding). ``select_metric`` names the quantity that
picks the best weights and drives early stopping — the validation loss, or a task metric
such as ``val_pair_f1``: a story model's loss keeps falling long after its grounding has
settled, and the weights that ground best are the ones worth keeping.

Data parallel: with ``num_processes > 1`` the loop launches that many worker processes
through Accelerate's launcher (PyTorch DDP; gloo on CPU, NCCL on GPUs). Every worker
takes its slice of each global batch, so the global batch — and the learning-rate
schedule — are those of a one-process run; validation, model selection, early stopping,
checkpoints and the progress bar run once, on rank 0, which hands the trained weights
back to the calling process. For several machines, run the same code under
``accelerate launch`` (see docs/scaling.md): the loop then trains in place on the ranks
the launcher made.

Determinism: batches come from a sampler that derives each epoch's order from
``seed`` and the epoch number, and the learning rate is a pure function of the step, so
a run resumed from a checkpoint repeats exactly what the uninterrupted run would do.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import socket
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from safetensors.torch import load_model, save_model
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm.auto import tqdm

from multimodal_lab.config import from_params
from multimodal_lab.training.checkpoint import (
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from multimodal_lab.training.schedule import SCHEDULES, lr_factor

MetricsLogger = Callable[[dict[str, float], int], None]


@dataclass
class TrainConfig:
    """Optimisation settings shared by all models."""

    seed: int = 0  # seeds batch order and dropout
    max_steps: int = 1000  # optimizer steps
    batch_size: int = 32  # examples per micro-batch
    grad_accum_steps: int = 1  # micro-batches per optimizer step
    lr: float = 1e-3  # peak learning rate (before lr_multipliers)
    weight_decay: float = 0.01  # AdamW decay on weight matrices only
    betas: tuple[float, float] = (0.9, 0.999)  # AdamW betas
    warmup_steps: int = 50  # linear warm-up steps
    schedule: str = "cosine"  # decay after warm-up: "cosine", "linear" or "constant"
    min_lr_ratio: float = 0.1  # final lr as a fraction of the peak
    grad_clip: float = 1.0  # max global gradient norm (0 = no clipping)
    lr_multipliers: dict[str, float] = field(default_factory=dict)  # param-name prefix -> lr factor
    eval_every: int = 100  # validate every this many steps (and at the end); 0 = only at the end
    eval_batch_size: int | None = None  # validation batch size (None = batch_size)
    max_eval_batches: int = 0  # validate on the first this many batches only (0 = the whole set)
    select_metric: str = "val_loss"  # picks the best weights and drives early stopping: val_loss or a task metric
    select_mode: str = "auto"  # "min", "max", or "auto" (min for names with loss/perplexity, else max)
    validation_records: int = 0  # validation records the family's task metrics are computed on (0 = loss only)
    early_stopping_patience: int = 0  # stop after this many evals without improvement (0 = off)
    early_stopping_min_delta: float = 0.0  # improvement smaller than this does not count
    checkpoint_every: int = 0  # write a checkpoint every this many steps (0 = never)
    checkpoint_dir: str | None = None  # where checkpoints go (None = no checkpoints)
    checkpoint_keep: int = 2  # most recent checkpoints kept on disk
    resume: bool = True  # continue from the newest checkpoint in checkpoint_dir if any
    mixed_precision: str = "auto"  # "auto" (bf16 on a capable GPU), "no" or "bf16"
    bucket_batches: int = 0  # sort each run of this many batches by text length before batching (0 = off)
    num_workers: int = 0  # DataLoader worker processes
    num_processes: int = 1  # data-parallel training processes on this machine (DDP through Accelerate)
    threads_per_process: int = 0  # torch threads of each process (0 = CPU cores / processes; one process: torch's own)
    main_port: int = 0  # rendezvous port of the processes (0 = a free one)
    progress_bar: bool = True  # show a tqdm bar

    def __post_init__(self) -> None:
        positive = ("max_steps", "batch_size", "grad_accum_steps")
        for key in positive:
            if int(getattr(self, key)) <= 0:
                raise ValueError(f"TrainConfig.{key} must be positive, got {getattr(self, key)}")
        for key in ("warmup_steps", "eval_every", "max_eval_batches", "early_stopping_patience", "checkpoint_every",
                    "num_workers", "validation_records", "threads_per_process", "main_port", "bucket_batches"):
            if int(getattr(self, key)) < 0:
                raise ValueError(f"TrainConfig.{key} must be >= 0, got {getattr(self, key)}")
        if self.lr <= 0:
            raise ValueError(f"TrainConfig.lr must be positive, got {self.lr}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"TrainConfig.schedule {self.schedule!r} is unknown; use one of {SCHEDULES}")
        if self.mixed_precision not in ("auto", "no", "bf16"):
            raise ValueError(f"TrainConfig.mixed_precision must be 'auto', 'no' or 'bf16', got {self.mixed_precision!r}")
        if self.num_processes < 1:
            raise ValueError(f"TrainConfig.num_processes must be >= 1, got {self.num_processes}")
        if self.batch_size % self.num_processes:
            raise ValueError(
                f"TrainConfig.batch_size {self.batch_size} is not divisible by num_processes {self.num_processes}: "
                f"every process takes an equal slice of the global batch; use a batch_size of "
                f"{self.num_processes * max(1, round(self.batch_size / self.num_processes))}"
            )
        if self.select_mode not in ("auto", "min", "max"):
            raise ValueError(f"TrainConfig.select_mode must be 'auto', 'min' or 'max', got {self.select_mode!r}")
        if self.checkpoint_every and not self.checkpoint_dir:
            raise ValueError("TrainConfig.checkpoint_every is set but checkpoint_dir is None; give a directory")
        self.betas = tuple(float(b) for b in self.betas)  # type: ignore[assignment]

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrainConfig:
        """Build from a ``params:`` dict; an unknown key fails naming it (nested ones too)."""
        return from_params(cls, values, where="TrainConfig")

    @property
    def minimise(self) -> bool:
        """Whether a lower ``select_metric`` is better."""
        if self.select_mode != "auto":
            return self.select_mode == "min"
        return any(word in self.select_metric for word in ("loss", "perplexity", "error"))


@dataclass
class TrainResult:
    """What a training run did."""

    history: list[dict[str, float]]  # one row per step: step, train_loss, lr, grad_norm[, val_loss, task metrics]
    best_val_loss: float  # lowest validation loss seen (inf without validation)
    steps: int  # optimizer steps completed in total (resumed ones included)
    stopped_early: bool  # early stopping ended the run
    resumed_from: int | None  # the checkpoint step this run continued from
    train_seconds: float = 0.0  # wall time of this call's steps (evaluation included)
    best_step: int | None = None  # the step whose weights were kept (None = the last)
    best_score: float | None = None  # its select_metric
    select_metric: str = "val_loss"  # what picked them
    num_processes: int = 1  # data-parallel processes that trained


class SeededBatchSampler(Sampler[list[int]]):
    """Endless batches of a fresh seeded permutation per epoch, starting at any batch.

    Batch ``b`` is the same whether the run started at 0 or resumed at ``b``: each
    epoch's order comes from ``seed`` and the epoch number alone. With several
    processes, process ``rank`` takes every ``world_size``-th example of each global
    batch, so together they see exactly the batches one process would.

    With ``lengths`` and ``bucket_batches``, each run of ``bucket_batches`` batches of the
    shuffled order is sorted by length before it is cut into batches, and those batches
    are shuffled again: a batch holds texts of similar length (less padding to compute)
    while the order of lengths over training stays random.
    """

    def __init__(self, size: int, batch_size: int, seed: int, start_batch: int = 0, rank: int = 0,
                 world_size: int = 1, lengths: Sequence[int] | None = None, bucket_batches: int = 0) -> None:
        if size < batch_size:
            raise ValueError(
                f"the training set has {size} examples, fewer than batch_size {batch_size}; "
                "lower batch_size or add data"
            )
        if batch_size % world_size:
            raise ValueError(f"batch_size {batch_size} is not divisible by the {world_size} processes")
        self.size, self.batch_size, self.seed, self.start_batch = size, batch_size, seed, start_batch
        self.rank, self.world_size = rank, world_size
        self.per_epoch = size // batch_size  # the ragged tail is dropped: equal batches
        if bucket_batches and (lengths is None or len(lengths) != size):
            raise ValueError("bucket_batches needs one length per training example")
        self.lengths = list(lengths) if bucket_batches else None
        self.bucket_batches = bucket_batches

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        """The global batches of one epoch, in order."""
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        order = torch.randperm(self.size, generator=generator).tolist()[: self.per_epoch * self.batch_size]
        width = self.batch_size
        if not self.bucket_batches:
            return [order[i * width:(i + 1) * width] for i in range(self.per_epoch)]
        batches: list[list[int]] = []
        span = self.bucket_batches * width
        for start in range(0, len(order), span):
            chunk = sorted(order[start:start + span], key=self.lengths.__getitem__)  # stable: ties keep order
            cut = [chunk[i:i + width] for i in range(0, len(chunk), width)]
            batches.extend(cut[i] for i in torch.randperm(len(cut), generator=generator).tolist())
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        batch = self.start_batch
        while True:
            epoch, offset = divmod(batch, self.per_epoch)
            for global_batch in self.epoch_batches(epoch)[offset:]:
                # this process's slice of the global batch (all of it with one process)
                yield global_batch[self.rank::self.world_size]
            batch = (epoch + 1) * self.per_epoch

    def __len__(self) -> int:  # endless; DataLoader needs a number only for len()
        return 2**62


def _no_decay(name: str, param: nn.Parameter, embedding_params: set[int]) -> bool:
    return param.ndim < 2 or id(param) in embedding_params or name.endswith(("_embed", "queries"))


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW with decay on weight matrices only and per-prefix learning-rate multipliers.

    Biases, norm scales, embeddings (``nn.Embedding`` tables, learned position tables,
    learned queries) get no weight decay. A parameter whose name starts with a key of
    ``lr_multipliers`` gets ``lr * multiplier`` (the longest matching key wins).
    """
    embedding_params = {id(p) for m in model.modules() if isinstance(m, nn.Embedding) for p in m.parameters()}
    groups: dict[tuple[float, bool], list[nn.Parameter]] = {}
    matched: set[str] = set()
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        keys = [k for k in config.lr_multipliers if name.startswith(k)]
        key = max(keys, key=len) if keys else None
        if key is not None:
            matched.add(key)
        multiplier = float(config.lr_multipliers[key]) if key is not None else 1.0
        decay = not _no_decay(name, param, embedding_params)
        groups.setdefault((multiplier, decay), []).append(param)
    unmatched = sorted(set(config.lr_multipliers) - matched)
    if unmatched:
        raise ValueError(f"lr_multipliers keys {unmatched} match no trainable parameter name; "
                         f"names start with e.g. {sorted({n.split('.')[0] for n, _ in model.named_parameters()})}")
    if not groups:
        raise ValueError("the model has no trainable parameters")
    param_groups = [
        {"params": params, "lr": config.lr * multiplier, "base_lr": config.lr * multiplier,
         "weight_decay": config.weight_decay if decay else 0.0}
        for (multiplier, decay), params in sorted(groups.items())
    ]
    return torch.optim.AdamW(param_groups, lr=config.lr, betas=config.betas)


def _mixed_precision(setting: str) -> str:
    if setting == "auto":
        return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"
    return setting


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


@torch.no_grad()
def evaluate_loss(model: nn.Module, loader: DataLoader, accelerator: Accelerator, max_batches: int = 0) -> float:
    """Mean ``model(**batch).loss`` over a loader (its first ``max_batches`` if > 0).

    Each batch's mean is weighted by the number of targets it averages over — the
    output's ``num_targets`` (labelled tokens) when the model reports it, else the batch
    size — so the result is the mean over all tokens, as the training loss is.
    """
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for index, batch in enumerate(loader):
        if max_batches and index >= max_batches:
            break
        batch = _to_device(batch, accelerator.device)
        size = len(next(iter(batch.values())))
        with accelerator.autocast():
            out = model(**batch)
        weight = getattr(out, "num_targets", None) or size
        total += float(out.loss) * weight
        count += weight
    model.train(was_training)
    return total / max(count, 1)


def _state_copy(model: nn.Module) -> dict[str, torch.Tensor]:
    # Separate clones on CPU: tied tensors become independent, which safetensors needs.
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


Validator = Callable[[nn.Module], dict[str, float]]


def train(
    model: nn.Module,
    train_dataset: Dataset,
    val_dataset: Dataset | None,
    collate_fn: Callable[[list[Any]], dict[str, Any]],
    config: TrainConfig,
    log_metrics: MetricsLogger | None = None,
    validate: Validator | None = None,
) -> TrainResult:
    """Train ``model`` in place and return what happened.

    Args:
        model: any module; ``model(**collate_fn(items))`` must return an object with
            a scalar ``.loss`` (and may give ``num_targets``, the count it averages over).
        train_dataset: training items.
        val_dataset: validation items (None = no validation loss).
        collate_fn: turns a list of items into the keyword batch of the model.
        config: optimisation settings.
        log_metrics: called after every step with ``({"train_loss", "lr", "grad_norm"
            [, "val_loss", task metrics]}, step)``, e.g. an MLflow logger. With several
            processes it is called for every step once training has finished.
        validate: the family's task metrics of the model in eval mode (e.g.
            ``{"val_pair_f1": 0.93}``), computed at every evaluation.

    Returns:
        The per-step history and the outcome. With evaluations, the model ends with the
        weights that scored best on ``config.select_metric``.

    Raises:
        FloatingPointError: when a loss is NaN or infinite, naming the step.
        ValueError: when ``select_metric`` is not among the evaluation's metrics.
    """
    if config.num_processes > 1 and int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return _launch(model, train_dataset, val_dataset, collate_fn, config, log_metrics, validate)
    threads = torch.get_num_threads()
    if config.threads_per_process:
        torch.set_num_threads(config.threads_per_process)
    try:
        return _train(model, train_dataset, val_dataset, collate_fn, config, log_metrics, validate)
    finally:
        torch.set_num_threads(threads)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _threads(config: TrainConfig) -> int:
    return config.threads_per_process or max(1, (os.cpu_count() or 1) // config.num_processes)


def _worker(model, train_dataset, val_dataset, collate_fn, config, validate, out_dir) -> None:
    """One data-parallel process (started by Accelerate's launcher, forked from the caller)."""
    torch.set_num_threads(_threads(config))
    result = _train(model, train_dataset, val_dataset, collate_fn, config, None, validate)
    if int(os.environ.get("RANK", "0")) == 0:
        save_model(model, str(Path(out_dir) / "model.safetensors"))  # the selected weights
        (Path(out_dir) / "result.json").write_text(json.dumps(dataclasses.asdict(result)))


def _launch(model, train_dataset, val_dataset, collate_fn, config, log_metrics, validate) -> TrainResult:
    """Train with ``config.num_processes`` processes; the selected weights come back into ``model``."""
    from accelerate import notebook_launcher
    from accelerate.state import AcceleratorState

    # An Accelerator made earlier in this process (an earlier training) holds a global
    # state the launcher refuses to fork; the workers make their own.
    AcceleratorState._reset_state(True)
    device = next(model.parameters()).device
    with tempfile.TemporaryDirectory(prefix="ddp-") as out_dir:
        notebook_launcher(
            _worker,
            args=(model, train_dataset, val_dataset, collate_fn, config, validate, out_dir),
            num_processes=config.num_processes,
            use_port=str(config.main_port or _free_port()),
            master_addr="127.0.0.1",
        )
        weights, result_file = Path(out_dir) / "model.safetensors", Path(out_dir) / "result.json"
        if not result_file.is_file():
            raise RuntimeError("the data-parallel workers ended without handing back a model; see their log above")
        load_model(model, str(weights), device=str(device))
        result = TrainResult(**json.loads(result_file.read_text()))
    AcceleratorState._reset_state(True)
    if log_metrics is not None:
        # MLflow's client is not safe to share across a fork, so the curve is logged here,
        # once, from the process that owns the run.
        for record in result.history:
            log_metrics({k: v for k, v in record.items() if k != "step"}, int(record["step"]))
    return result


def _train(
    model: nn.Module,
    train_dataset: Dataset,
    val_dataset: Dataset | None,
    collate_fn: Callable[[list[Any]], dict[str, Any]],
    config: TrainConfig,
    log_metrics: MetricsLogger | None,
    validate: Validator | None,
) -> TrainResult:
    accelerator = Accelerator(cpu=not torch.cuda.is_available(), mixed_precision=_mixed_precision(config.mixed_precision))
    rank, world = accelerator.process_index, accelerator.num_processes
    main = accelerator.is_main_process
    torch.manual_seed(config.seed + rank)  # dropout and other in-model randomness; rank 0 = a one-process run
    optimizer = build_optimizer(model, config)
    model, optimizer = accelerator.prepare(model, optimizer)
    raw_model = accelerator.unwrap_model(model)
    base_lrs = [group["base_lr"] for group in optimizer.param_groups]
    minimise = config.minimise
    worst = math.inf if minimise else -math.inf

    step, history, best_val, evals_since_best = 0, [], math.inf, 0
    best_score, best_step = worst, None
    best_weights: dict[str, torch.Tensor] | None = None
    resumed_from: int | None = None
    if config.checkpoint_dir and config.resume:
        found = latest_checkpoint(config.checkpoint_dir)
        if found is not None:
            loaded = load_checkpoint(found, model=raw_model, optimizer=optimizer)
            step = resumed_from = loaded.step
            history = loaded.state["history"]
            best_val = float(loaded.state["best_val_loss"])
            best_score = float(loaded.state.get("best_score", best_val if config.select_metric == "val_loss" else worst))
            best_step = loaded.state.get("best_step")
            evals_since_best = int(loaded.state["evals_since_best"])
            best_weights = loaded.best_weights
            if loaded.state.get("stopped_early"):
                return _finish(raw_model, history, best_val, best_weights, step, True, resumed_from, 0.0,
                               best_step, best_score, config)

    lengths = train_dataset.lengths() if config.bucket_batches and hasattr(train_dataset, "lengths") else None
    if config.bucket_batches and lengths is None:
        raise ValueError("train.bucket_batches needs a training dataset that reports lengths(); set it to 0")
    sampler = SeededBatchSampler(len(train_dataset), config.batch_size, config.seed,
                                 start_batch=step * config.grad_accum_steps, rank=rank, world_size=world,
                                 lengths=lengths, bucket_batches=config.bucket_batches)
    train_loader = DataLoader(train_dataset, batch_sampler=sampler, collate_fn=collate_fn,
                              num_workers=config.num_workers, persistent_workers=config.num_workers > 0,
                              pin_memory=accelerator.device.type == "cuda",
                              # Its own generator: creating the iterator must not draw from the
                              # global one, or a resumed run's dropout would differ.
                              generator=torch.Generator().manual_seed(config.seed))
    val_loader = None
    if main and val_dataset is not None and len(val_dataset) > 0:
        val_loader = DataLoader(val_dataset, batch_size=config.eval_batch_size or config.batch_size,
                                shuffle=False, collate_fn=collate_fn, num_workers=config.num_workers,
                                generator=torch.Generator().manual_seed(config.seed))
    # every process must agree on where the evaluations are (they meet there to share the stop decision)
    evaluates = (val_dataset is not None and len(val_dataset) > 0) or validate is not None
    batches = iter(train_loader)
    device = accelerator.device
    params = [p for p in raw_model.parameters() if p.requires_grad]
    stopped_early = False
    started = time.perf_counter()
    bar = tqdm(total=config.max_steps, initial=step, disable=not (config.progress_bar and main), desc="train",
               mininterval=1.0, dynamic_ncols=True)
    model.train()
    try:
        while step < config.max_steps:
            factor = lr_factor(step, warmup_steps=config.warmup_steps, total_steps=config.max_steps,
                               schedule=config.schedule, min_lr_ratio=config.min_lr_ratio)
            for group, base in zip(optimizer.param_groups, base_lrs):
                group["lr"] = base * factor
            step_loss = 0.0
            for _ in range(config.grad_accum_steps):
                batch = _to_device(next(batches), device)
                with accelerator.autocast():
                    loss = model(**batch).loss
                accelerator.backward(loss / config.grad_accum_steps if config.grad_accum_steps > 1 else loss)
                detached = loss.detach()
                # every process sees the same (mean) value, so all stop together on a bad one
                value = (accelerator.reduce(detached, "mean") if world > 1 else detached).item()
                if not math.isfinite(value):
                    raise FloatingPointError(
                        f"loss is {value} at step {step + 1}; lower lr (now {config.lr:g}), keep grad_clip "
                        f"on (now {config.grad_clip:g}) or check the batch for bad values"
                    )
                step_loss += value
            record: dict[str, float] = {"step": step + 1, "train_loss": step_loss / config.grad_accum_steps,
                                        "lr": config.lr * factor}
            if config.grad_clip > 0:
                record["grad_norm"] = float(accelerator.clip_grad_norm_(params, config.grad_clip))
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1

            last = step == config.max_steps
            if evaluates and (last or (config.eval_every and step % config.eval_every == 0)):
                if main:
                    if val_loader is not None:
                        # the unwrapped model: a DDP forward on one rank would wait for the others
                        record["val_loss"] = evaluate_loss(raw_model, val_loader, accelerator, config.max_eval_batches)
                        best_val = min(best_val, record["val_loss"])
                    if validate is not None:
                        was_training = raw_model.training
                        raw_model.eval()
                        try:
                            record.update({k: float(v) for k, v in validate(raw_model).items()})
                        finally:
                            raw_model.train(was_training)
                    if config.select_metric not in record:
                        raise ValueError(
                            f"select_metric {config.select_metric!r} is not among the evaluation's metrics "
                            f"{sorted(k for k in record if k not in ('step', 'lr', 'grad_norm', 'train_loss'))}; "
                            "set train.select_metric to one of them (task metrics need validation_records > 0)"
                        )
                    score = record[config.select_metric]
                    delta = config.early_stopping_min_delta
                    if (score < best_score - delta) if minimise else (score > best_score + delta):
                        best_score, best_step, evals_since_best = score, step, 0
                        best_weights = _state_copy(raw_model)
                    else:
                        evals_since_best += 1
                        if config.early_stopping_patience and evals_since_best >= config.early_stopping_patience:
                            stopped_early = True
                    shown = {"train": f"{record['train_loss']:.3f}", config.select_metric.replace("val_", "val "):
                             f"{score:.3f}"}
                    bar.set_postfix(shown, refresh=False)
                if world > 1:
                    flag = torch.tensor([int(stopped_early)], device=device)
                    torch.distributed.broadcast(flag, src=0)
                    stopped_early = bool(flag.item())
            history.append(record)
            if main and config.checkpoint_dir and config.checkpoint_every and (
                    step % config.checkpoint_every == 0 or last or stopped_early):
                save_checkpoint(config.checkpoint_dir, step=step, model=raw_model, optimizer=optimizer,
                                best_weights=best_weights, keep=config.checkpoint_keep,
                                state={"history": history, "best_val_loss": best_val, "best_score": best_score,
                                       "best_step": best_step, "evals_since_best": evals_since_best,
                                       "stopped_early": stopped_early, "config": dataclasses.asdict(config)})
            if main and log_metrics is not None:
                log_metrics({k: v for k, v in record.items() if k != "step"}, step)
            bar.update(1)
            if stopped_early:
                break
    finally:
        bar.close()
    return _finish(raw_model, history, best_val, best_weights, step, stopped_early, resumed_from,
                   time.perf_counter() - started, best_step, best_score, config, world)


def _finish(model: nn.Module, history: list[dict[str, float]], best_val: float,
            best_weights: dict[str, torch.Tensor] | None, step: int, stopped_early: bool,
            resumed_from: int | None, seconds: float, best_step: int | None, best_score: float,
            config: TrainConfig, world: int = 1) -> TrainResult:
    if best_weights is not None:
        model.load_state_dict(best_weights)
    return TrainResult(history=history, best_val_loss=best_val, steps=step, stopped_early=stopped_early,
                       resumed_from=resumed_from, train_seconds=seconds, best_step=best_step,
                       best_score=None if best_step is None else best_score, select_metric=config.select_metric,
                       num_processes=world)
