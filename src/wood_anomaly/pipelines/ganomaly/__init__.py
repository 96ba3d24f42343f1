"""GANomaly (Keras): encoder-decoder-encoder generator and discriminator."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
