from multimodal_lab.datasets.pretrained import PretrainedDirDataset

__all__ = ["PretrainedDirDataset"]
