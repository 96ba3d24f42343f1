"""Convolutional AutoEncoder (Keras): per-pixel reconstruction error maps."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
