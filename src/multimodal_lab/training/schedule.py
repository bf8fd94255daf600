"""Learning-rate schedules as pure functions of the step.

The loop sets each parameter group's rate to ``base_lr * lr_factor(step)`` itself, so a
resumed run needs no scheduler state: the step alone restores the rate exactly.
"""
from __future__ import annotations

import math

SCHEDULES = ("cosine", "linear", "constant")


def lr_factor(step: int, *, warmup_steps: int, total_steps: int, schedule: str = "cosine",
              min_lr_ratio: float = 0.0) -> float:
    """Multiplier of the base learning rate for optimizer step ``step`` (0-based).

    Linear warm-up from ``1 / (warmup_steps + 1)`` to 1 over ``warmup_steps`` steps, then
    a decay to ``min_lr_ratio`` at ``total_steps`` (cosine or linear), or flat
    ("constant").

    Args:
        step: the optimizer step about to be taken, 0-based.
        warmup_steps: steps of linear warm-up (0 = none).
        total_steps: the step count at which the decay reaches ``min_lr_ratio``.
        schedule: "cosine", "linear" or "constant".
        min_lr_ratio: floor of the multiplier after decay, in [0, 1].
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; use one of {SCHEDULES}")
    if not 0.0 <= min_lr_ratio <= 1.0:
        raise ValueError(f"min_lr_ratio must be in [0, 1], got {min_lr_ratio}")
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    if schedule == "constant":
        return 1.0
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    if schedule == "cosine":
        decay = 0.5 * (1.0 + math.cos(math.pi * progress))
    else:
        decay = 1.0 - progress
    return min_lr_ratio + (1.0 - min_lr_ratio) * decay
