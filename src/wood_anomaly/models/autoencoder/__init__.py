"""Convolutional autoencoder (Keras 3): the seed's 32-64-128 encoder/decoder."""

from wood_anomaly.models.autoencoder.model import AutoEncoder

__all__ = ["AutoEncoder"]
