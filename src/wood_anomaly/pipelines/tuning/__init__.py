"""Tuning: an Optuna study per model on label-free validation data built from train/good only."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
