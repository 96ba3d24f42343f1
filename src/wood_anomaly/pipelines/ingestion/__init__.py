"""Ingestion: raw MVTec-layout folder (or generated synthetic wood) -> manifest + prepared arrays."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
