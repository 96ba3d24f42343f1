"""Inference: score a folder of new board images with the latest (or a pinned) trained model."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
