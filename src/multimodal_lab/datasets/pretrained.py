"""A versioned Kedro dataset for ``save_pretrained`` directories.

Nothing built into Kedro versions a *directory* written by ``save_pretrained`` (a
tokenizer, a transformers model, or one of this project's models). This dataset does:
each save goes to ``<filepath>/<version>/<name>/``, written to a temporary sibling first
and renamed into place, so a crash never leaves a half-written version that a later
load would pick up as "latest".
"""
from __future__ import annotations

import importlib
import shutil
import uuid
from pathlib import Path, PurePosixPath
from typing import Any

from kedro.io.core import AbstractVersionedDataset, DatasetError, Version


def _import_class(class_path: str) -> type:
    module_name, _, attr = class_path.rpartition(".")
    if not module_name:
        raise DatasetError(
            f"model_class '{class_path}' must be a dotted path such as "
            "'transformers.PreTrainedTokenizerFast'"
        )
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise DatasetError(f"cannot import model_class '{class_path}': {exc}") from exc


def write_directory(final: Path, write: Any) -> None:
    """``write(staging)`` fills a temporary sibling of ``final``, which is then renamed into place."""
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = final.parent / f".{final.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        write(staging)
        staging.rename(final)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


class PretrainedDirDataset(AbstractVersionedDataset[Any, Any]):
    """Saves ``obj.save_pretrained(dir)`` and loads ``model_class.from_pretrained(dir)``.

    Example catalog entry::

        story.tokenizer:
          type: multimodal_lab.datasets.PretrainedDirDataset
          filepath: data/04_feature/story/tokenizer
          model_class: transformers.PreTrainedTokenizerFast
          versioned: true
    """

    def __init__(
        self,
        *,
        filepath: str,
        model_class: str,
        load_args: dict[str, Any] | None = None,
        save_args: dict[str, Any] | None = None,
        version: Version | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        """Create the dataset.

        Args:
            filepath: Directory path (the version folders are created under it).
            model_class: Dotted path of a class with ``from_pretrained``.
            load_args: Keyword arguments for ``from_pretrained``.
            save_args: Keyword arguments for ``save_pretrained``.
            version: Kedro load/save version.
            metadata: Free-form metadata (used by the project's hooks).
        """
        super().__init__(filepath=PurePosixPath(filepath), version=version)
        self._model_class = model_class
        self._load_args = dict(load_args or {})
        self._save_args = dict(save_args or {})
        self.metadata = metadata

    def load(self) -> Any:
        path = Path(self._get_load_path())
        if not path.is_dir():
            raise DatasetError(f"no saved directory at {path}; run the pipeline that produces it")
        return _import_class(self._model_class).from_pretrained(str(path), **self._load_args)

    def save(self, data: Any) -> None:
        if not hasattr(data, "save_pretrained"):
            raise DatasetError(
                f"{type(data).__name__} has no save_pretrained(); PretrainedDirDataset "
                "stores tokenizers and models only"
            )
        write_directory(Path(self._get_save_path()), lambda staging: data.save_pretrained(str(staging), **self._save_args))
        self._clear_version_cache()

    def _exists(self) -> bool:
        try:
            path = Path(self._get_load_path())
        except DatasetError:
            return False
        return path.is_dir()

    def _describe(self) -> dict[str, Any]:
        return {
            "filepath": str(self._filepath),
            "model_class": self._model_class,
            "version": self._version,
        }


class ModelDirDataset(PretrainedDirDataset):
    """A versioned model directory of any model family.

    Loading reads the family from the directory's ``config.json`` (see
    ``multimodal_lab.families.load_model``), so one catalog factory serves every family::

        "{family}.model":
          type: multimodal_lab.datasets.ModelDirDataset
          filepath: data/06_models/{family}/model
          versioned: true
    """

    def __init__(
        self,
        *,
        filepath: str,
        load_args: dict[str, Any] | None = None,
        save_args: dict[str, Any] | None = None,
        version: Version | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(filepath=filepath, model_class="multimodal_lab.families.load_model",
                         load_args=load_args, save_args=save_args, version=version, metadata=metadata)

    def load(self) -> Any:
        from multimodal_lab.families import load_model

        path = Path(self._get_load_path())
        if not path.is_dir():
            raise DatasetError(f"no saved model at {path}; run the pipeline that trains it")
        return load_model(path, **self._load_args)
