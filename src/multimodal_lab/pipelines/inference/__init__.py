"""``<family>_inference`` pipelines: a family's trained model on a folder of the user's images."""
from .pipeline import create_inference_pipeline

__all__ = ["create_inference_pipeline"]
