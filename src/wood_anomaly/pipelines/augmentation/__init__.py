"""Augmentation: a seeded preview grid of the transforms the gradient-trained models use on the fly."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
