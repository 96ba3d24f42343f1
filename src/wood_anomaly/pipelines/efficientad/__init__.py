"""EfficientAD: teacher-student-autoencoder on a frozen pretrained teacher."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
