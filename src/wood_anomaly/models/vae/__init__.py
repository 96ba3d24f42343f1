"""Variational autoencoder (Keras 3): strided conv encoder, dense latent, transposed-conv decoder."""

# TensorFlow set up (quietly) before model.py's `import keras` imports it
import wood_anomaly.models.keras  # noqa: F401,I001
from wood_anomaly.models.vae.model import VAE, Sampling

__all__ = ["VAE", "Sampling"]
