"""Variational autoencoder: 4 strided Conv+BN+LeakyReLU, dense z_mean/z_log_var, sampling layer;
decoder Dense -> (S/16 x S/16 x 64) -> 4 Conv2DTranspose(+BN+LeakyReLU) -> sigmoid image.

Loss per image: sum of squared pixel errors + beta * KL(q(z|x) || N(0, I)) (the Gaussian ELBO with
unit variance; a per-pixel *mean* error against a summed KL makes the posterior collapse).
Scoring is deterministic: the decoder reconstructs from z_mean.
Artifacts: {"encoder": keras.Model -> [z_mean, z_log_var, z], "decoder": keras.Model}.
"""

from __future__ import annotations

from typing import Any, ClassVar

import keras
import numpy as np
import tensorflow as tf

from wood_anomaly.models.keras import (
    KerasReconstructionModel,
    LossTrainer,
    batch_norm,
    config_input,
    register_custom_object,
)


@register_custom_object
class Sampling(keras.layers.Layer):
    """Reparameterisation trick: z = z_mean + exp(z_log_var / 2) * eps, eps ~ N(0, I)."""

    def __init__(self, seed: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs):
        z_mean, z_log_var = inputs
        eps = keras.random.normal(tf.shape(z_mean), seed=self.seed_generator)
        return z_mean + tf.exp(0.5 * z_log_var) * eps

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "seed": self.seed}


@register_custom_object
class SoftClip(keras.layers.Layer):
    """``c * tanh(x / c)``: the identity near 0, smoothly bounded to (-c, c)."""

    def __init__(self, limit: float = 10.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.limit = float(limit)

    def call(self, inputs):
        return self.limit * tf.tanh(inputs / self.limit)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "limit": self.limit}


class _VAETrainer(LossTrainer):
    loss_names = ("loss", "reconstruction", "kl")

    def __init__(self, encoder: keras.Model, decoder: keras.Model, beta: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.encoder, self.decoder, self.beta = encoder, decoder, float(beta)

    def call(self, x, training=False):
        z_mean, _, _ = self.encoder(x, training=training)
        return self.decoder(z_mean, training=training)

    def compute_losses(self, x, training):
        z_mean, z_log_var, z = self.encoder(x, training=training)
        recon = self.decoder(z if training else z_mean, training=training)
        rec = tf.reduce_mean(tf.reduce_sum(tf.square(x - recon), axis=[1, 2, 3]))
        kl = tf.reduce_mean(
            -0.5 * tf.reduce_sum(1.0 + z_log_var - tf.square(z_mean) - tf.exp(z_log_var), axis=1)
        )
        return {"loss": rec + self.beta * kl, "reconstruction": rec, "kl": kl}


class VAE(KerasReconstructionModel):
    """The seed's VAE, scaled to the input size (decoder starts at image_size / 16)."""

    name: ClassVar[str] = "vae"
    artifact_names: ClassVar[tuple[str, ...]] = ("encoder", "decoder")
    DEFAULTS: ClassVar[dict[str, Any]] = {
        "filters": [32, 64, 128, 256],
        "latent_dim": 128,
        "decoder_channels": 64,
        "beta": 1.0,
        "log_var_clip": None,  # a number c: z_log_var = c * tanh(z_log_var / c), so the variance stays in e^-c..e^c
    }

    def build_networks(self) -> dict[str, keras.Model]:
        filters = [int(f) for f in self.config["filters"]]
        if len(filters) != 4:
            raise ValueError(f"vae: 'filters' must list 4 channel counts (4 strided convs), got {filters}")
        latent = int(self.config["latent_dim"])
        inp, h = config_input(self.input_shape)
        for f in filters:
            h = keras.layers.Conv2D(f, 3, strides=2, padding="same")(h)
            h = batch_norm()(h)
            h = keras.layers.LeakyReLU(0.2)(h)
        h = keras.layers.Flatten()(h)
        z_mean = keras.layers.Dense(latent, name="z_mean")(h)
        z_log_var = keras.layers.Dense(latent, name="z_log_var")(h)
        clip = self.config.get("log_var_clip")
        if clip is not None:  # bounds exp(z_log_var): no KL blow-up while the encoder is still random
            z_log_var = SoftClip(float(clip), name="z_log_var_bounded")(z_log_var)
        z = Sampling(name="sampling")([z_mean, z_log_var])
        encoder = keras.Model(inp, [z_mean, z_log_var, z], name="vae_encoder")

        start, ch = self.input_shape[0] // 16, int(self.config["decoder_channels"])
        z_in = keras.Input(shape=(latent,), name="z")
        d = keras.layers.Dense(start * start * ch)(z_in)
        d = keras.layers.Reshape((start, start, ch))(d)
        for f in reversed(filters):
            d = keras.layers.Conv2DTranspose(f, 3, strides=2, padding="same")(d)
            d = batch_norm()(d)
            d = keras.layers.LeakyReLU(0.2)(d)
        out = keras.layers.Conv2D(self.input_shape[-1], 3, padding="same", activation="sigmoid", name="reconstruction")(d)
        decoder = keras.Model(z_in, out, name="vae_decoder")
        return {"encoder": encoder, "decoder": decoder}

    def make_trainer(self):
        trainer = _VAETrainer(self.networks["encoder"], self.networks["decoder"], float(self.config["beta"]))
        trainer.compile(optimizer=self.optimizer())
        return trainer, []

    def reconstruct(self, x: np.ndarray) -> tuple[np.ndarray, None]:
        z_mean, _, _ = self.infer("encoder", x)
        return np.asarray(self.infer("decoder", z_mean), dtype=np.float32), None
