"""The `prepare` pipeline."""
from .pipeline import CORPORA, create_corpus_pipeline, create_pipeline

__all__ = ["CORPORA", "create_corpus_pipeline", "create_pipeline"]
