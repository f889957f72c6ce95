"""Retrieval evaluation and search. Not part of the Hub model code: the model files never import it."""

from .index import VideoIndex, build_index, exact_search
from .metrics import retrieval_metrics


__all__ = ["VideoIndex", "build_index", "exact_search", "retrieval_metrics"]
