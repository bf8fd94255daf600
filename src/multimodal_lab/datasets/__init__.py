"""Custom Kedro datasets of the project."""
from multimodal_lab.datasets.cache import JSONCacheDataset
from multimodal_lab.datasets.images import PNGFolderDataset
from multimodal_lab.datasets.pretrained import ModelDirDataset, PretrainedDirDataset

__all__ = ["JSONCacheDataset", "ModelDirDataset", "PNGFolderDataset", "PretrainedDirDataset"]
