"""Variational AutoEncoder (Keras): reconstruction + beta*KL, reconstruction error maps."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
