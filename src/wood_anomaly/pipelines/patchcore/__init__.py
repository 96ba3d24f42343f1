"""PatchCore: pretrained patch features, greedy coreset memory bank in FAISS, nearest-neighbour scoring."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
