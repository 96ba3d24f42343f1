"""GANomaly (Akcay et al. 2018): generator = encoder E1 -> decoder -> encoder E2, plus a discriminator.

Generator loss = w_adv * adversarial + w_con * contextual + w_lat * latent (paper 1 / 50 / 1):
adversarial = feature matching on the discriminator's last hidden features ("feature") or BCE
against "real" ("bce"); contextual = L1 (or MSE) between image and reconstruction; latent = L2
between E1(x) and E2(G(x)). Discriminator: BCE real vs fake.
Score = aggregated reconstruction-error map (+ latent_weight * normalised ||E1(x) - E2(G(x))||^2).
Artifacts: {"generator": keras.Model -> [reconstruction, z, z_hat],
            "discriminator": keras.Model -> [logit, features]}.
"""

from __future__ import annotations

from typing import Any, ClassVar

import keras
import numpy as np
import tensorflow as tf

from wood_anomaly.models.keras import KerasReconstructionModel, LossTrainer, batch_norm, config_input


def _dcgan_encoder(x, filters: list[int], out_dim: int, name: str):
    """Strided 4x4 convs (BN from the 2nd, LeakyReLU 0.2) down to 4x4, then a 4x4 valid conv to out_dim."""
    h = x
    for i, f in enumerate(filters):
        h = keras.layers.Conv2D(f, 4, strides=2, padding="same", use_bias=False, name=f"{name}_conv{i}")(h)
        if i > 0:
            h = batch_norm(name=f"{name}_bn{i}")(h)
        h = keras.layers.LeakyReLU(0.2, name=f"{name}_act{i}")(h)
    features = h
    z = keras.layers.Conv2D(out_dim, 4, padding="valid", use_bias=False, name=f"{name}_out")(h)
    return keras.layers.Flatten(name=f"{name}_flat")(z), features


def _down_filters(image_size: int, base: int, max_filters: int) -> list[int]:
    n = int(np.log2(image_size // 4))
    return [min(base * 2**i, max_filters) for i in range(n)]


class _GANomalyTrainer(LossTrainer):
    loss_names = ("loss", "adversarial", "contextual", "latent", "d_loss")

    def __init__(self, generator, discriminator, d_optimizer, cfg: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.generator, self.discriminator, self.d_optimizer = generator, discriminator, d_optimizer
        self.w_adv, self.w_con, self.w_lat = (float(cfg[k]) for k in ("w_adversarial", "w_contextual", "w_latent"))
        self.adv_kind, self.con_kind = str(cfg["adversarial_loss"]), str(cfg["contextual_loss"])
        if self.adv_kind not in ("feature", "bce") or self.con_kind not in ("l1", "mse"):
            raise ValueError("ganomaly: adversarial_loss must be 'feature' or 'bce', contextual_loss 'l1' or 'mse'")
        self.bce = keras.losses.BinaryCrossentropy(from_logits=True)
        self.d_optimizer.build(self.discriminator.trainable_variables)

    def call(self, x, training=False):
        return self.generator(x, training=training)[0]

    def trained_variables(self):
        """The generator's: ``optimizer`` trains it, ``d_optimizer`` the discriminator."""
        return self.generator.trainable_variables

    def _step_losses(self, x, training):
        """Generator losses and the discriminator's loss, with one discriminator pass over each batch.

        The discriminator sees the real and the reconstructed batch once; the generator's gradient flows
        through its pass over the reconstruction, the discriminator's own gradient through both (the same
        values as two separate passes, which in training mode would only move its BatchNorm statistics twice).
        """
        fake, z, z_hat = self.generator(x, training=training)
        logit_fake, feat_fake = self.discriminator(fake, training=training)
        logit_real, feat_real = self.discriminator(x, training=training)
        if self.adv_kind == "feature":
            adv = tf.reduce_mean(tf.square(tf.reduce_mean(feat_real, 0) - tf.reduce_mean(feat_fake, 0)))
        else:
            adv = self.bce(tf.ones_like(logit_fake), logit_fake)
        diff = x - fake
        con = tf.reduce_mean(tf.abs(diff)) if self.con_kind == "l1" else tf.reduce_mean(tf.square(diff))
        lat = tf.reduce_mean(tf.square(z - z_hat))
        total = self.w_adv * adv + self.w_con * con + self.w_lat * lat
        d_loss = 0.5 * (self.bce(tf.ones_like(logit_real), logit_real) + self.bce(tf.zeros_like(logit_fake), logit_fake))
        return {"loss": total, "adversarial": adv, "contextual": con, "latent": lat, "d_loss": d_loss}

    def train_step(self, data):
        x = self._x(data)
        g_vars, d_vars = self.trained_variables(), self.discriminator.trainable_variables
        with tf.GradientTape(persistent=True) as tape:
            losses = self._step_losses(x, training=True)
        g_grads = tape.gradient(losses["loss"], g_vars)
        d_grads = tape.gradient(losses["d_loss"], d_vars)
        del tape
        self.optimizer.apply_gradients(zip(g_grads, g_vars))
        self.d_optimizer.apply_gradients(zip(d_grads, d_vars))
        return self._record(losses)

    def test_step(self, data):
        return self._record(self._step_losses(self._x(data), training=False))


class _FollowLearningRate(keras.callbacks.Callback):
    """Keeps the discriminator's learning rate at the generator's (which ReduceLROnPlateau moves)."""

    def __init__(self, d_optimizer: keras.optimizers.Optimizer) -> None:
        super().__init__()
        self.d_optimizer = d_optimizer

    def on_epoch_begin(self, epoch, logs=None):
        self.d_optimizer.learning_rate.assign(float(self.model.optimizer.learning_rate))


class GANomaly(KerasReconstructionModel):
    """GANomaly with DCGAN-style networks sized to image_size (down to 4x4)."""

    name: ClassVar[str] = "ganomaly"
    artifact_names: ClassVar[tuple[str, ...]] = ("generator", "discriminator")
    DEFAULTS: ClassVar[dict[str, Any]] = {
        "learning_rate": 2e-4,
        "beta_1": 0.5,
        "monitor": "val_contextual",
        "base_filters": 32,
        "max_filters": 256,
        "latent_dim": 100,
        "w_adversarial": 1.0,
        "w_contextual": 50.0,
        "w_latent": 1.0,
        "adversarial_loss": "feature",  # 'feature' (feature matching, paper) or 'bce'
        "contextual_loss": "l1",  # 'l1' (paper) or 'mse' (seed)
        "latent_weight": 0.0,  # weight of the normalised latent distance in the image score
    }

    def build_networks(self) -> dict[str, keras.Model]:
        size, ch = self.input_shape[0], self.input_shape[-1]
        filters = _down_filters(size, int(self.config["base_filters"]), int(self.config["max_filters"]))
        nz = int(self.config["latent_dim"])

        inp, h = config_input(self.input_shape)
        z, _ = _dcgan_encoder(h, filters, nz, "e1")
        d = keras.layers.Reshape((1, 1, nz))(z)
        d = keras.layers.Conv2DTranspose(filters[-1], 4, padding="valid", use_bias=False, name="dec_in")(d)
        d = batch_norm(name="dec_bn_in")(d)
        d = keras.layers.ReLU(name="dec_act_in")(d)
        for i, f in enumerate(reversed(filters[:-1])):
            d = keras.layers.Conv2DTranspose(f, 4, strides=2, padding="same", use_bias=False, name=f"dec_conv{i}")(d)
            d = batch_norm(name=f"dec_bn{i}")(d)
            d = keras.layers.ReLU(name=f"dec_act{i}")(d)
        fake = keras.layers.Conv2DTranspose(ch, 4, strides=2, padding="same", activation="sigmoid", name="reconstruction")(d)
        z_hat, _ = _dcgan_encoder(fake, filters, nz, "e2")
        generator = keras.Model(inp, [fake, z, z_hat], name="ganomaly_generator")

        d_in = keras.Input(shape=self.input_shape, name="image")
        logit, features = _dcgan_encoder(d_in, filters, 1, "d")
        features = keras.layers.GlobalAveragePooling2D(name="d_features")(features)
        discriminator = keras.Model(d_in, [logit, features], name="ganomaly_discriminator")
        return {"generator": generator, "discriminator": discriminator}

    def make_trainer(self):
        d_opt = self.optimizer()
        trainer = _GANomalyTrainer(self.networks["generator"], self.networks["discriminator"], d_opt, self.config)
        trainer.compile(optimizer=self.optimizer())
        return trainer, [_FollowLearningRate(d_opt)]

    def reconstruct(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        fake, z, z_hat = self.infer("generator", x)
        latent = np.mean(np.square(np.asarray(z) - np.asarray(z_hat)), axis=1)
        return np.asarray(fake, dtype=np.float32), latent.astype(np.float32)
