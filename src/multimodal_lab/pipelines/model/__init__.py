"""The model-family pipeline template: train -> evaluate -> report, one per family."""
from .pipeline import create_model_pipeline

__all__ = ["create_model_pipeline"]
