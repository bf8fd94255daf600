"""Data-parallel training through Accelerate: 2 CPU processes (gloo) train as 1 process does."""
from __future__ import annotations

import pytest
import torch

from multimodal_lab.training.loop import SeededBatchSampler, TrainConfig, train
from torch import nn

from training.test_loop import Output, Regression, collate

pytestmark = pytest.mark.usefixtures("one_thread")


def _config(**overrides) -> TrainConfig:
    values = dict(seed=3, max_steps=12, batch_size=8, lr=0.05, warmup_steps=0, eval_every=4, grad_clip=1.0,
                  progress_bar=False, threads_per_process=1)
    values.update(overrides)
    return TrainConfig(**values)


class Net(nn.Module):
    """Every parameter takes part in the loss (DDP's default expects that)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(6, 16), nn.LayerNorm(16), nn.ReLU(), nn.Linear(16, 1))

    def forward(self, x, y):
        return Output(loss=(self.body(x).squeeze(-1) - y).square().mean())


def _fresh() -> Net:
    torch.manual_seed(0)
    return Net()


def test_two_processes_follow_the_one_process_loss_curve_and_hand_back_the_weights(tmp_path):
    single_model, double_model = _fresh(), _fresh()
    single = train(single_model, Regression(96, 0), Regression(32, 1), collate, _config())
    logged = []
    double = train(double_model, Regression(96, 0), Regression(32, 1), collate, _config(num_processes=2),
                   log_metrics=lambda metrics, step: logged.append((step, metrics)))
    assert double.num_processes == 2 and single.num_processes == 1
    one = [row["train_loss"] for row in single.history]
    two = [row["train_loss"] for row in double.history]
    assert len(one) == len(two) == 12
    # same global batches, the mean of equal slices' means: the curves agree to float noise
    assert two == pytest.approx(one, rel=1e-4, abs=1e-6)
    evaluated = [r["step"] for r in single.history if "val_loss" in r]
    assert evaluated == [r["step"] for r in double.history if "val_loss" in r] == [4, 8, 12]
    assert [r["val_loss"] for r in double.history if "val_loss" in r] == pytest.approx(
        [r["val_loss"] for r in single.history if "val_loss" in r], rel=1e-4, abs=1e-6)
    assert double.best_step == single.best_step and double.steps == 12
    # the selected weights came back into the caller's model and save/load like any other
    for a, b in zip(single_model.state_dict().values(), double_model.state_dict().values()):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)
    torch.save(double_model.state_dict(), tmp_path / "w.pt")
    reloaded = _fresh()
    reloaded.load_state_dict(torch.load(tmp_path / "w.pt", weights_only=True))
    assert torch.equal(reloaded.body[0].weight, double_model.body[0].weight)
    # the curve reached the logger once per step, after training
    assert [step for step, _ in logged] == list(range(1, 13))


def test_the_sampler_splits_each_global_batch_between_processes():
    whole = SeededBatchSampler(40, 8, seed=1)
    parts = [SeededBatchSampler(40, 8, seed=1, rank=r, world_size=2) for r in range(2)]
    for batch, left, right in zip(iter(whole), iter(parts[0]), iter(parts[1])):
        assert sorted(left + right) == sorted(batch) and len(left) == len(right) == 4
        if batch == whole.__iter__().__next__():
            break
    with pytest.raises(ValueError, match="not divisible by num_processes 3"):
        TrainConfig(batch_size=8, num_processes=3)
