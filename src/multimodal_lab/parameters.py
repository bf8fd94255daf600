"""Check every parameter block against the config class that reads it, before anything runs.

Nodes turn their ``params:`` dictionaries into config dataclasses, so a mistyped key
fails — but only when that node runs, after minutes of data preparation, and a block
pasted at the wrong place (``web:`` instead of ``sources.web``) is never read at all.
:func:`check_parameters` walks the whole parameter tree once, at the start of a run
(the project hook calls it), and reports every problem together, each with its dotted
key and the closest known key.

A block whose ``enabled`` is false only has its keys checked: its values may be
placeholders (an empty ``start_urls``) until the user turns it on.
"""
from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable, Mapping
from typing import Any

from multimodal_lab.config import from_params


class ParameterError(ValueError):
    """One or more parameter blocks do not fit their config classes; the message lists each."""


def _block_classes() -> dict[str, Any]:
    """Dotted block name -> the config class that reads it (imported lazily)."""
    from multimodal_lab.captioning.blip2 import Blip2Config
    from multimodal_lab.data.corpora import CorpusSpec
    from multimodal_lab.data.ingest import IngestConfig
    from multimodal_lab.data.scene_world import SceneWorldConfig
    from multimodal_lab.data.sources.coco import COCOSourceConfig
    from multimodal_lab.data.sources.huggingface import HFSourceConfig
    from multimodal_lab.data.sources.local_folder import LocalFolderConfig
    from multimodal_lab.data.sources.story_reasoning import StoryReasoningConfig
    from multimodal_lab.data.sources.web import WebSourceConfig
    from multimodal_lab.data.split import SplitConfig
    from multimodal_lab.families import available_families, get_family
    from multimodal_lab.pipelines.prepare import CORPORA
    from multimodal_lab.training.loop import TrainConfig

    blocks: dict[str, Any] = {
        "sources.scene_world": SceneWorldConfig,
        "sources.local_folder": LocalFolderConfig,
        "sources.web": WebSourceConfig,
        "sources.huggingface": HFSourceConfig,
        "sources.story_reasoning": StoryReasoningConfig,
        "sources.coco": COCOSourceConfig,
        "ingest": IngestConfig,
        "captioning": Blip2Config,
        "split": SplitConfig,
    }
    for corpus in CORPORA:
        blocks[f"{corpus}.corpus"] = CorpusSpec
    for name in available_families():
        family = get_family(name)
        blocks[f"{name}.model"] = family.config_class
        blocks[f"{name}.train"] = TrainConfig
        blocks[f"{name}.evaluation"] = family.eval_settings_class
        if family.variants:
            from multimodal_lab.families.base import SeedRepeats

            blocks[f"{name}.compare"] = SeedRepeats
        if family.inference_params_class is not None:
            blocks[f"{name}_inference"] = family.inference_params_class
        blocks.update(family.parameter_blocks)
        if family.world_params:
            world = family.world_params.removeprefix("params:")
            blocks[world] = SceneWorldConfig
            blocks[world.rsplit(".", 1)[0] + ".story_reasoning"] = StoryReasoningConfig
    return blocks


#: Blocks with an ``enabled`` switch (not a field of their config class).
SWITCHED = ("sources.scene_world", "sources.local_folder", "sources.web", "sources.huggingface",
            "sources.story_reasoning", "sources.coco", "captioning")


def _check_block(cls: type, values: Any, where: str, switched: bool) -> str | None:
    if not isinstance(values, Mapping):
        return f"{where} must be a mapping of keys to values, got {values!r}"
    values = dict(values)
    enabled = True
    if switched:
        enabled = values.pop("enabled", False)
        if not isinstance(enabled, bool):
            return f"parameter '{where}.enabled' must be true or false, got {enabled!r}"
    try:
        if enabled:
            from_params(cls, values, where=where)
        else:
            known = {f.name for f in dataclasses.fields(cls)}
            unknown = sorted(set(values) - known)
            if unknown:
                hints = [f"'{k}'" + (f" (did you mean '{c[0]}'?)" if (c := difflib.get_close_matches(k, known, 1))
                                     else "") for k in unknown]
                return f"unknown parameter {', '.join(hints)} in {where}; known keys: {', '.join(sorted(known))}"
    except (ValueError, TypeError) as error:
        return str(error)
    return None


def _hint(path: str, blocks: Mapping[str, Any], containers: set[str]) -> str | None:
    """The block a stray key most likely belongs to, for the error message."""
    parent, _, leaf = path.rpartition(".")
    # 1. a block whose class has this key, named most like the key's parent ("caption.model" -> captioning)
    owners = [b for b, cls in blocks.items() if dataclasses.is_dataclass(cls)
              and leaf in {f.name for f in dataclasses.fields(cls)}]
    if parent and owners:
        return max(owners, key=lambda b: difflib.SequenceMatcher(None, parent, b).ratio())
    # 2. a block named like the whole key ("sources.webb" -> sources.web)
    candidates = [c for c in [*blocks, *containers] if not path.startswith(c + ".")]
    close = difflib.get_close_matches(path, candidates, n=1, cutoff=0.6)
    if close:
        return close[0]
    # 3. a block whose last part is the key ("web" -> sources.web)
    same_leaf = [b for b in blocks if b.split(".")[-1] == leaf]
    return same_leaf[0] if same_leaf else None


def check_parameters(params: Mapping[str, Any],
                     blocks: Mapping[str, Any] | None = None,
                     allow_extra: Callable[[str], bool] | None = None) -> None:
    """Check a whole parameter tree (as Kedro merges it from ``parameters*.yml``).

    Args:
        params: the parameters, nested as in the YAML files.
        blocks: dotted block name -> config class (default: every block of the project).
        allow_extra: returns True for a dotted key that is allowed although no block
            reads it (e.g. a user's own parameters for their own nodes).

    Raises:
        ParameterError: listing every problem: a block that does not fit its class, or
            a key that no block reads (with the closest known block).
    """
    blocks = dict(_block_classes() if blocks is None else blocks)
    problems: list[str] = []
    stray: list[str] = []
    containers = {name.rsplit(".", 1)[0] for name in blocks if "." in name}

    def visit(value: Any, path: str) -> None:
        if path in blocks:
            problem = _check_block(blocks[path], value, f"params:{path}",
                                   path in SWITCHED or path.endswith((".scene_world", ".story_reasoning")))
            if problem:
                problems.append(problem)
            return
        if path and path not in containers:
            if allow_extra is not None and allow_extra(path):
                return
            hint = _hint(path, blocks, containers)
            problems.append(f"params:{path} is read by nothing" + (f" (did you mean params:{hint}?)" if hint else ""))
            stray.append(path)
            return
        if not isinstance(value, Mapping):
            problems.append(f"params:{path} must be a mapping of blocks, got {value!r}")
            return
        for key, child in value.items():
            visit(child, f"{path}.{key}" if path else str(key))

    visit(params, "")
    if problems:
        listing = f"\nparameter blocks: {', '.join(sorted(blocks))}" if stray else ""
        raise ParameterError("the parameters do not fit the project:\n- " + "\n- ".join(problems) + listing)
