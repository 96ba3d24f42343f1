"""Batch scoring on Spark: a folder or glob of board images -> the registered model -> versioned Parquet."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
