"""One model-directory format for every family: ``config.json``, ``model.safetensors``, ``tokenizer/``.

A family's model writes its config payload (which names the family and its format
version) and its weights through :func:`save_directory`, which stages the files in a
sibling temporary directory and moves them in place at the end, so an interrupted save
never leaves a half-written model behind; :func:`read_directory` reads them back.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from safetensors.torch import load_model, save_model
from torch import nn

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_DIR = "tokenizer"


def save_directory(model: nn.Module, directory: str | os.PathLike, payload: dict[str, Any], tokenizer=None) -> None:
    """Write ``payload`` as ``config.json``, the model's weights and its tokenizer into ``directory``."""
    target = Path(directory)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        (staging / CONFIG_FILE).write_text(json.dumps(payload, indent=2, sort_keys=True))
        save_model(model, str(staging / WEIGHTS_FILE))  # handles tied weights (GPT-2's lm_head/wte)
        if tokenizer is not None:
            tokenizer.save_pretrained(str(staging / TOKENIZER_DIR))
        old = None
        if target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.replace(target, old)
        os.replace(staging, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def read_config(directory: str | os.PathLike, what: str, newest_format: int | None = None) -> dict[str, Any]:
    """The ``config.json`` payload of a model directory (``what`` names the expected kind in errors).

    With ``newest_format``, a payload written in a newer format than this code reads is refused
    (its ``format_version``; 1 when absent).
    """
    source = Path(directory)
    if not (source / CONFIG_FILE).is_file():
        raise FileNotFoundError(f"{source} has no {CONFIG_FILE}; is it a {what} directory?")
    payload = json.loads((source / CONFIG_FILE).read_text())
    version = int(payload.get("format_version", 1))
    if newest_format is not None and version > newest_format:
        raise ValueError(f"this model directory has format {version}, newer than this code reads "
                         f"({newest_format}); upgrade multimodal_lab")
    return payload


def load_tokenizer(directory: str | os.PathLike):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(Path(directory) / TOKENIZER_DIR))


def load_weights(model: nn.Module, directory: str | os.PathLike, map_location) -> nn.Module:
    """Load the directory's weights into ``model`` (strict) and move it to ``map_location``."""
    load_model(model, str(Path(directory) / WEIGHTS_FILE), device=str(map_location))
    return model.to(map_location)
