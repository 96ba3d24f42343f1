"""Reporting: one comparison report (CSV + self-contained HTML) over every model's latest saved results."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
