"""Training checkpoints that survive interruption and load without unpickling code.

A checkpoint is a directory ``step-00000123`` holding

- ``model.safetensors``: the weights (shared tensors such as tied embeddings handled),
- ``best.safetensors``: the best-validation weights kept for early stopping (optional),
- ``optimizer.pt``: the optimizer state dict (tensors and numbers only),
- ``rng.pt``: torch CPU (and CUDA) generator states,
- ``state.json``: step, early-stopping counters, history and the training config.

It is written to a temporary directory and moved in place with ``os.replace``; a file
``latest`` (also replaced atomically) names the newest complete checkpoint. A run killed
mid-write therefore leaves the previous checkpoint intact.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, load_model, save_file, save_model
from torch import nn

LATEST = "latest"


@dataclass
class Checkpoint:
    """What :func:`load_checkpoint` returns besides the weights it loads in place."""

    step: int  # optimizer steps completed
    state: dict[str, Any]  # the JSON state (counters, history, config)
    best_weights: dict[str, torch.Tensor] | None  # early-stopping best weights, if saved
    path: Path  # the checkpoint directory


def _step_dir(step: int) -> str:
    return f"step-{step:08d}"


def save_checkpoint(directory: str | os.PathLike, *, step: int, model: nn.Module,
                    optimizer: torch.optim.Optimizer, state: dict[str, Any],
                    best_weights: dict[str, torch.Tensor] | None = None, keep: int = 2) -> Path:
    """Write a complete checkpoint atomically and prune older ones.

    Args:
        directory: the run's checkpoint directory (created if missing).
        step: optimizer steps completed.
        model: the model whose weights are saved.
        optimizer: the optimizer whose state is saved.
        state: JSON-serialisable run state (counters, history, config).
        best_weights: CPU state dict of the best model so far, if any.
        keep: how many most recent checkpoints to keep.

    Returns:
        The path of the new checkpoint directory.
    """
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    final = root / _step_dir(step)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=root))
    try:
        save_model(model, str(staging / "model.safetensors"))
        if best_weights is not None:
            save_file({k: v.contiguous() for k, v in best_weights.items()}, str(staging / "best.safetensors"))
        torch.save(optimizer.state_dict(), staging / "optimizer.pt")
        rng = {"cpu": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.stack(torch.cuda.get_rng_state_all())
        torch.save(rng, staging / "rng.pt")
        (staging / "state.json").write_text(json.dumps({"step": step, **state}, sort_keys=True))
        if final.exists():
            shutil.rmtree(final)
        os.replace(staging, final)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    pointer = root / f".{LATEST}.tmp"
    pointer.write_text(final.name)
    os.replace(pointer, root / LATEST)
    for old in sorted(p for p in root.glob("step-*") if p.is_dir())[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(directory: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint in ``directory``, or None."""
    root = Path(directory)
    pointer = root / LATEST
    if pointer.is_file():
        candidate = root / pointer.read_text().strip()
        if (candidate / "state.json").is_file():
            return candidate
    complete = sorted(p for p in root.glob("step-*") if (p / "state.json").is_file())
    return complete[-1] if complete else None


def load_checkpoint(path: str | os.PathLike, *, model: nn.Module,
                    optimizer: torch.optim.Optimizer | None = None, restore_rng: bool = True) -> Checkpoint:
    """Load a checkpoint into ``model`` (and ``optimizer``) in place; restore RNG states.

    Nothing is unpickled: weights come from safetensors and the optimizer/RNG files are
    read with ``torch.load(weights_only=True)``.
    """
    path = Path(path)
    device = next(model.parameters()).device
    load_model(model, str(path / "model.safetensors"), device=str(device))
    if optimizer is not None:
        optimizer.load_state_dict(torch.load(path / "optimizer.pt", map_location=device, weights_only=True))
    if restore_rng:
        rng = torch.load(path / "rng.pt", weights_only=True)
        torch.set_rng_state(rng["cpu"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(list(rng["cuda"]))
    best = load_file(str(path / "best.safetensors")) if (path / "best.safetensors").is_file() else None
    state = json.loads((path / "state.json").read_text())
    return Checkpoint(step=int(state["step"]), state=state, best_weights=best, path=path)
