"""Retrieval evaluation and search. Not part of the Hub model code: the model files never import it."""

from .metrics import retrieval_metrics


__all__ = ["retrieval_metrics"]
