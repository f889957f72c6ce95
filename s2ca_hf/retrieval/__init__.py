"""Retrieval evaluation and search. Not part of the Hub model code: the model files never import it."""

from .build import build_index
from .index import VideoIndex
from .metrics import retrieval_metrics
from .search import exact_search


__all__ = ["VideoIndex", "build_index", "exact_search", "retrieval_metrics"]
