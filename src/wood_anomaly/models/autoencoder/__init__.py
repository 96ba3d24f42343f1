"""Convolutional autoencoder (Keras 3): the seed's 32-64-128 encoder/decoder."""

# TensorFlow set up (quietly) before model.py's `import keras` imports it
import wood_anomaly.models.keras  # noqa: F401,I001
from wood_anomaly.models.autoencoder.model import AutoEncoder

__all__ = ["AutoEncoder"]
