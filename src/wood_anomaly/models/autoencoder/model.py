"""Convolutional autoencoder: Conv(32)-Pool-Conv(64)-Pool-Conv(128)-Pool, mirrored decoder, sigmoid output.

Trained with MSE (+ optional SSIM loss); anomaly map = per-pixel reconstruction error (see wood_anomaly.models.keras.maps).
Artifacts: {"model": keras.Model}.
"""

from __future__ import annotations

from typing import Any, ClassVar

import keras
import numpy as np
import tensorflow as tf

from wood_anomaly.models.keras import KerasReconstructionModel, LossTrainer, config_input, ssim_map


class _AETrainer(LossTrainer):
    loss_names = ("loss", "mse", "ssim")

    def __init__(self, model: keras.Model, ssim_weight: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.net, self.ssim_weight = model, float(ssim_weight)

    def call(self, x, training=False):
        return self.net(x, training=training)

    def compute_losses(self, x, training):
        recon = self.net(x, training=training)
        mse = tf.reduce_mean(tf.square(x - recon))
        ssim = tf.reduce_mean(1.0 - ssim_map(x, recon))
        return {"loss": mse + self.ssim_weight * ssim, "mse": mse, "ssim": ssim}


class AutoEncoder(KerasReconstructionModel):
    """The seed's conv autoencoder (filters configurable; optional 1x1 bottleneck)."""

    name: ClassVar[str] = "autoencoder"
    artifact_names: ClassVar[tuple[str, ...]] = ("model",)
    DEFAULTS: ClassVar[dict[str, Any]] = {
        "epochs": 40,
        "filters": [32, 64, 128],
        "bottleneck_channels": 0,  # >0: 1x1 conv squeezing the code to this many channels
        "ssim_loss_weight": 0.0,
    }

    def build_networks(self) -> dict[str, keras.Model]:
        filters = [int(f) for f in self.config["filters"]]
        inp, h = config_input(self.input_shape)
        for f in filters:
            h = keras.layers.Conv2D(f, 3, padding="same", activation="relu")(h)
            h = keras.layers.MaxPooling2D(2)(h)
        if int(self.config["bottleneck_channels"]) > 0:
            h = keras.layers.Conv2D(int(self.config["bottleneck_channels"]), 1, activation="relu", name="bottleneck")(h)
        for f in reversed(filters):
            h = keras.layers.Conv2D(f, 3, padding="same", activation="relu")(h)
            h = keras.layers.UpSampling2D(2)(h)
        out = keras.layers.Conv2D(self.input_shape[-1], 3, padding="same", activation="sigmoid", name="reconstruction")(h)
        return {"model": keras.Model(inp, out, name="autoencoder")}

    def make_trainer(self):
        trainer = _AETrainer(self.networks["model"], float(self.config["ssim_loss_weight"]))
        trainer.compile(optimizer=self.optimizer())
        return trainer, []

    def reconstruct(self, x: np.ndarray) -> tuple[np.ndarray, None]:
        return np.asarray(self.infer("model", x), dtype=np.float32), None
