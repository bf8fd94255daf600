"""A versioned Kedro dataset for a folder of PNG images.

``kedro_datasets``' ``PartitionedDataset`` writes a folder of files but cannot be versioned;
this dataset saves ``{file name: PIL image}`` as ``<filepath>/<version>/<name>/<file name>``,
written to a temporary sibling first and renamed into place (as the model directories are).
"""
from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

from kedro.io.core import AbstractVersionedDataset, DatasetError, Version
from PIL import Image

from multimodal_lab.datasets.pretrained import write_directory


class PNGFolderDataset(AbstractVersionedDataset[dict, dict]):
    """Saves and loads ``{file name: PIL image}`` as PNG files of one folder.

    Example catalog entry::

        story_continuation_inference.images:
          type: multimodal_lab.datasets.PNGFolderDataset
          filepath: data/07_model_output/story_continuation_inference/images
          versioned: true
    """

    def __init__(self, *, filepath: str, version: Version | None = None,
                 metadata: dict[str, Any] | None = None) -> None:
        super().__init__(filepath=PurePosixPath(filepath), version=version)
        self.metadata = metadata

    def load(self) -> dict[str, Image.Image]:
        path = Path(self._get_load_path())
        if not path.is_dir():
            raise DatasetError(f"no saved images at {path}; run the pipeline that writes them")
        images = {}
        for file in sorted(path.glob("*.png")):
            with Image.open(file) as image:
                images[file.name] = image.copy()
        return images

    def save(self, data: dict[str, Image.Image]) -> None:
        for name, image in data.items():
            if not isinstance(image, Image.Image):
                raise DatasetError(f"{name}: expected a PIL image, got {type(image).__name__}")
            if Path(name).name != name or not name.endswith(".png"):
                raise DatasetError(f"{name!r} must be a plain file name ending in .png")

        def write(folder: Path) -> None:
            folder.mkdir(parents=True)
            for name, image in data.items():
                image.save(folder / name, format="PNG")

        write_directory(Path(self._get_save_path()), write)
        self._clear_version_cache()

    def _exists(self) -> bool:
        try:
            return Path(self._get_load_path()).is_dir()
        except DatasetError:
            return False

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath), "version": self._version}
