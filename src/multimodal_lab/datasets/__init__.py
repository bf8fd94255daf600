"""Custom Kedro datasets of the project."""
from multimodal_lab.datasets.cache import JSONCacheDataset
from multimodal_lab.datasets.pretrained import PretrainedDirDataset

__all__ = ["JSONCacheDataset", "PretrainedDirDataset"]
