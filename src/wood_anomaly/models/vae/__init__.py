"""Variational autoencoder (Keras 3): strided conv encoder, dense latent, transposed-conv decoder."""

from wood_anomaly.models.vae.model import VAE, Sampling

__all__ = ["VAE", "Sampling"]
