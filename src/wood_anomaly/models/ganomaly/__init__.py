"""GANomaly (Keras 3): encoder-decoder-encoder generator + discriminator."""

from wood_anomaly.models.ganomaly.model import GANomaly

__all__ = ["GANomaly"]
