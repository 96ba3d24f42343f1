"""GANomaly (Keras 3): encoder-decoder-encoder generator + discriminator."""

# TensorFlow set up (quietly) before model.py's `import keras` imports it
import wood_anomaly.models.keras  # noqa: F401,I001
from wood_anomaly.models.ganomaly.model import GANomaly

__all__ = ["GANomaly"]
