"""The shared training loop: determinism, resume, early stopping, accumulation, errors."""
from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from multimodal_lab.training.checkpoint import latest_checkpoint, save_checkpoint
from multimodal_lab.training.loop import (
    SeededBatchSampler,
    TrainConfig,
    build_optimizer,
    train,
)
from multimodal_lab.training.schedule import lr_factor

pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


class Regression(Dataset):
    """y = x @ w + noise, fixed by a seed."""

    def __init__(self, n: int, seed: int, sign: float = 1.0) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 6, generator=generator)
        weights = torch.linspace(-1.0, 1.0, 6)
        self.y = sign * (self.x @ weights) + 0.05 * torch.randn(n, generator=generator)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, index: int):
        return self.x[index], self.y[index]


def collate(items):
    return {"x": torch.stack([x for x, _ in items]), "y": torch.stack([y for _, y in items])}


@dataclass
class Output:
    loss: torch.Tensor


class TinyNet(nn.Module):
    def __init__(self, dropout: float = 0.1, nan_at_call: int | None = None) -> None:
        super().__init__()
        self.embed = nn.Embedding(3, 4)  # unused by the maths; checks the no-decay rule
        self.body = nn.Sequential(nn.Linear(6, 16), nn.LayerNorm(16), nn.ReLU(), nn.Dropout(dropout), nn.Linear(16, 1))
        self.calls, self.nan_at_call = 0, nan_at_call

    def forward(self, x, y):
        self.calls += 1
        loss = (self.body(x).squeeze(-1) - y).square().mean()
        if self.nan_at_call is not None and self.calls >= self.nan_at_call:
            loss = loss * float("nan")
        return Output(loss)


def config(**overrides) -> TrainConfig:
    values = dict(seed=3, max_steps=20, batch_size=8, lr=3e-2, warmup_steps=3, eval_every=5, progress_bar=False,
                  mixed_precision="no")
    values.update(overrides)
    return TrainConfig(**values)


def fresh(seed: int = 0, **kwargs) -> TinyNet:
    torch.manual_seed(seed)
    return TinyNet(**kwargs)


def test_training_lowers_the_loss_and_logs_every_step():
    logged = []
    result = train(fresh(), Regression(64, 0), Regression(32, 1), collate, config(max_steps=40),
                   log_metrics=lambda metrics, step: logged.append((step, metrics)))
    assert [step for step, _ in logged] == list(range(1, 41))
    assert {"train_loss", "lr", "grad_norm"} <= set(logged[0][1])
    assert sum("val_loss" in m for _, m in logged) == 8  # every 5 steps
    assert result.history[-1]["train_loss"] < 0.5 * result.history[0]["train_loss"]
    assert result.steps == 40 and not result.stopped_early and result.resumed_from is None
    assert result.best_val_loss == min(r["val_loss"] for r in result.history if "val_loss" in r)


def test_same_seed_same_metrics_different_seed_different():
    runs = [train(fresh(), Regression(64, 0), Regression(32, 1), collate, config(seed=seed)).history
            for seed in (3, 3, 4)]
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


def test_interrupted_run_resumes_to_the_same_result(tmp_path):
    straight = train(fresh(), Regression(64, 0), Regression(32, 1), collate, config())

    class Crash(RuntimeError):
        pass

    def crash_at_12(metrics, step):
        if step == 12:
            raise Crash

    interrupted = config(checkpoint_dir=str(tmp_path / "ckpt"), checkpoint_every=5)
    with pytest.raises(Crash):
        train(fresh(), Regression(64, 0), Regression(32, 1), collate, interrupted, log_metrics=crash_at_12)
    assert latest_checkpoint(tmp_path / "ckpt").name == "step-00000010"
    # A new process would rebuild the model from scratch with another init: the checkpoint must win.
    resumed = train(fresh(seed=99), Regression(64, 0), Regression(32, 1), collate, interrupted)
    assert resumed.resumed_from == 10 and resumed.steps == 20
    assert abs(resumed.history[-1]["train_loss"] - straight.history[-1]["train_loss"]) < 1e-6
    assert abs(resumed.best_val_loss - straight.best_val_loss) < 1e-6
    assert [r["step"] for r in resumed.history] == list(range(1, 21))
    assert sorted(p.name for p in (tmp_path / "ckpt").glob("step-*")) == ["step-00000015", "step-00000020"]


def test_half_written_checkpoint_is_ignored(tmp_path):
    model = fresh()
    optimizer = build_optimizer(model, config())
    save_checkpoint(tmp_path, step=5, model=model, optimizer=optimizer, state={"history": []})
    (tmp_path / ".step-00000010.abc").mkdir()  # a crash while staging step 10
    (tmp_path / ".step-00000010.abc" / "model.safetensors").write_bytes(b"partial")
    assert latest_checkpoint(tmp_path).name == "step-00000005"


def test_early_stopping_restores_the_best_weights():
    # Validation wants the opposite sign, so it gets worse as training succeeds.
    model = fresh(dropout=0.0)
    result = train(model, Regression(64, 0), Regression(32, 1, sign=-1.0), collate,
                   config(max_steps=200, eval_every=2, early_stopping_patience=3))
    assert result.stopped_early and result.steps < 200
    evals = [r["val_loss"] for r in result.history if "val_loss" in r]
    assert len(evals) == evals.index(min(evals)) + 1 + 3
    val = Regression(32, 1, sign=-1.0)
    model.eval()
    with torch.no_grad():
        final = model(**collate([val[i] for i in range(32)])).loss.item()
    assert final == pytest.approx(result.best_val_loss, rel=1e-5)


def test_validation_can_use_a_subset():
    model = fresh()
    result = train(model, Regression(64, 0), Regression(32, 1), collate,
                   config(max_steps=5, eval_every=0, eval_batch_size=8, max_eval_batches=1))
    val = Regression(32, 1)
    model.eval()
    with torch.no_grad():
        first_batch = model(**collate([val[i] for i in range(8)])).loss.item()
        everything = model(**collate([val[i] for i in range(32)])).loss.item()
    assert result.history[-1]["val_loss"] == pytest.approx(first_batch, rel=1e-6)
    assert first_batch != pytest.approx(everything, rel=1e-3)


def test_gradient_accumulation_matches_one_big_batch():
    big = fresh(dropout=0.0)
    train(big, Regression(64, 0), None, collate, config(max_steps=1, batch_size=8, warmup_steps=0, grad_clip=0.0))
    accumulated = fresh(dropout=0.0)
    train(accumulated, Regression(64, 0), None, collate,
          config(max_steps=1, batch_size=4, grad_accum_steps=2, warmup_steps=0, grad_clip=0.0))
    for a, b in zip(big.parameters(), accumulated.parameters()):
        assert torch.allclose(a, b, atol=1e-6)


def test_nan_loss_names_the_step():
    with pytest.raises(FloatingPointError, match="loss is nan at step 3.*lower lr"):
        train(fresh(nan_at_call=3), Regression(64, 0), None, collate, config())


def test_optimizer_groups_decay_and_lr_multipliers():
    model = fresh()
    optimizer = build_optimizer(model, config(weight_decay=0.1, lr=1e-3, lr_multipliers={"body.0": 10.0}))
    by_param = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    assert by_param[id(model.embed.weight)]["weight_decay"] == 0.0
    assert by_param[id(model.body[1].weight)]["weight_decay"] == 0.0  # LayerNorm scale
    assert by_param[id(model.body[4].bias)]["weight_decay"] == 0.0
    assert by_param[id(model.body[4].weight)]["weight_decay"] == 0.1
    assert by_param[id(model.body[0].weight)]["lr"] == pytest.approx(1e-2)
    assert by_param[id(model.body[0].bias)]["lr"] == pytest.approx(1e-2)
    assert by_param[id(model.body[4].weight)]["lr"] == pytest.approx(1e-3)
    with pytest.raises(ValueError, match="match no trainable parameter"):
        build_optimizer(model, config(lr_multipliers={"encoder.": 2.0}))


def test_lr_multipliers_survive_the_schedule():
    seen = []
    model = fresh()
    original = torch.optim.AdamW.step

    def spy(self, *args, **kwargs):
        seen.append(sorted(g["lr"] for g in self.param_groups))
        return original(self, *args, **kwargs)

    torch.optim.AdamW.step = spy
    try:
        train(model, Regression(64, 0), None, collate, config(max_steps=6, lr_multipliers={"body.0": 4.0}))
    finally:
        torch.optim.AdamW.step = original
    for rates in seen:
        assert rates[-1] == pytest.approx(4.0 * rates[0])


def test_schedule_shapes():
    kwargs = dict(warmup_steps=10, total_steps=110, min_lr_ratio=0.1)
    assert lr_factor(0, **kwargs) == pytest.approx(1 / 11)
    assert lr_factor(9, **kwargs) == pytest.approx(10 / 11)
    assert lr_factor(10, **kwargs) == pytest.approx(1.0)
    assert lr_factor(60, **kwargs) == pytest.approx(0.1 + 0.9 * 0.5)  # cosine half-way
    assert lr_factor(110, **kwargs) == pytest.approx(0.1)
    assert lr_factor(35, schedule="linear", **kwargs) == pytest.approx(0.1 + 0.9 * 0.75)
    assert lr_factor(80, schedule="constant", **kwargs) == 1.0
    with pytest.raises(ValueError, match="unknown schedule"):
        lr_factor(0, schedule="step", **kwargs)


def test_sampler_is_resumable_and_covers_each_epoch():
    full = iter(SeededBatchSampler(10, 3, seed=1))
    batches = [next(full) for _ in range(9)]  # 3 per epoch, one leftover example dropped
    resumed = iter(SeededBatchSampler(10, 3, seed=1, start_batch=4))
    assert [next(resumed) for _ in range(5)] == batches[4:]
    first_epoch = sum(batches[:3], [])
    assert len(set(first_epoch)) == 9
    assert batches[:3] != batches[3:6]
    with pytest.raises(ValueError, match="fewer than batch_size 8"):
        SeededBatchSampler(5, 8, seed=0)


def test_config_errors_name_the_key():
    with pytest.raises(ValueError, match="TrainConfig.max_steps"):
        TrainConfig(max_steps=0)
    with pytest.raises(ValueError, match="checkpoint_dir is None"):
        TrainConfig(checkpoint_every=10)
    with pytest.raises(ValueError, match="unknown parameter 'learning_rate'.* in TrainConfig"):
        TrainConfig.from_dict({"learning_rate": 1e-3})
    assert math.isclose(TrainConfig.from_dict({"lr": 5e-4}).lr, 5e-4)


@dataclass
class TokenOutput:
    loss: torch.Tensor
    num_targets: int


class CountingNet(nn.Module):
    """Loss = mean of per-example values over `n` 'tokens' each: the validation mean must weight by tokens."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x, y):
        tokens = int(y.shape[0] * 4 if x[0, 0] > 0 else y.shape[0])  # batches differ in token count
        return TokenOutput(loss=self.scale * x[:, 0].abs().mean(), num_targets=tokens)


def test_validation_loss_is_a_mean_over_tokens_not_examples():
    from torch.utils.data import DataLoader
    from accelerate import Accelerator

    from multimodal_lab.training.loop import evaluate_loss

    class Two(Dataset):
        def __init__(self):
            self.x = torch.tensor([[1.0] + [0] * 5, [1.0] + [0] * 5, [-3.0] + [0] * 5, [-3.0] + [0] * 5])

        def __len__(self):
            return 4

        def __getitem__(self, i):
            return self.x[i], torch.tensor(0.0)

    loader = DataLoader(Two(), batch_size=2, collate_fn=collate)
    value = evaluate_loss(CountingNet(), loader, Accelerator(cpu=True))
    # batch 1: loss 1 over 8 tokens; batch 2: loss 3 over 2 tokens -> (8 + 6) / 10, not (1 + 3) / 2
    assert value == pytest.approx(1.4)


def test_a_task_metric_picks_the_kept_weights_and_drives_early_stopping():
    scores = iter([0.2, 0.9, 0.5, 0.4, 0.3, 0.1])
    seen = []

    def validate(model):
        assert not model.training  # scored in eval mode, handed back in train mode
        seen.append(model.body[0].weight.detach().clone())
        return {"val_task": next(scores)}

    model = fresh(dropout=0.0)
    result = train(model, Regression(64, 0), Regression(32, 1), collate,
                   config(max_steps=30, eval_every=5, select_metric="val_task", early_stopping_patience=3),
                   validate=validate)
    # 0.9 at the second evaluation (step 10) is the best; three worse ones stop the run at step 25
    assert result.best_step == 10 and result.best_score == 0.9 and result.select_metric == "val_task"
    assert result.stopped_early and result.steps == 25
    assert torch.equal(model.body[0].weight, seen[1])  # the weights of step 10 were kept
    assert all("val_loss" in r and "val_task" in r for r in result.history if r["step"] % 5 == 0)
    with pytest.raises(ValueError, match="select_metric 'val_f1' is not among the evaluation's metrics"):
        train(fresh(), Regression(64, 0), Regression(32, 1), collate, config(max_steps=5, select_metric="val_f1"))
    assert TrainConfig(select_metric="val_pair_f1").minimise is False
    assert TrainConfig(select_metric="val_loss").minimise is True


def test_length_buckets_keep_every_example_once_per_epoch_and_cut_padding():
    lengths = [int(x) for x in torch.randint(5, 60, (96,), generator=torch.Generator().manual_seed(0))]
    plain = SeededBatchSampler(96, 8, seed=2)
    bucketed = SeededBatchSampler(96, 8, seed=2, lengths=lengths, bucket_batches=4)
    for epoch in range(2):
        batches = bucketed.epoch_batches(epoch)
        assert sorted(i for b in batches for i in b) == list(range(96)) and all(len(b) == 8 for b in batches)

    def padding(batches):
        return sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in batches)

    assert padding(bucketed.epoch_batches(0)) < 0.6 * padding(plain.epoch_batches(0))
    # the order of lengths over the epoch is not sorted (no length curriculum)
    means = [sum(lengths[i] for i in b) / 8 for b in bucketed.epoch_batches(0)]
    assert means != sorted(means)
    # resumable: starting at batch 5 gives what the uninterrupted run gives from there
    resumed = iter(SeededBatchSampler(96, 8, seed=2, start_batch=5, lengths=lengths, bucket_batches=4))
    assert next(resumed) == bucketed.epoch_batches(0)[5]
    with pytest.raises(ValueError, match="one length per training example"):
        SeededBatchSampler(96, 8, seed=2, lengths=[1, 2], bucket_batches=4)
