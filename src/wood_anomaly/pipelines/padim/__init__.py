"""PaDiM: per-position Gaussians of pretrained patch features, Mahalanobis distance maps."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
