"""The training loop: a generic loss-dict trainer, per-epoch log lines, ``Model.fit`` with early stopping."""

from __future__ import annotations

import logging
import time
from typing import Any, ClassVar

import keras
import tensorflow as tf

logger = logging.getLogger(__name__)


class LossTrainer(keras.Model):
    """Generic trainer over a dict of named losses; subclasses implement :meth:`compute_losses`.

    ``compute_losses(x, training)`` returns a dict whose "loss" entry is minimised w.r.t.
    :meth:`trained_variables`. Every entry is tracked as a per-epoch mean (``val_`` for validation).
    """

    loss_names: ClassVar[tuple[str, ...]] = ("loss",)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.trackers = {n: keras.metrics.Mean(name=n) for n in self.loss_names}

    @property
    def metrics(self) -> list[keras.metrics.Metric]:
        return list(self.trackers.values())

    def compute_losses(self, x: tf.Tensor, training: bool) -> dict[str, tf.Tensor]:
        raise NotImplementedError

    def trained_variables(self) -> list[tf.Variable]:
        return self.trainable_variables

    @staticmethod
    def _x(data: Any) -> tf.Tensor:
        while isinstance(data, (tuple, list)):
            data = data[0]
        return data

    def _record(self, losses: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        for name, value in losses.items():
            self.trackers[name].update_state(value)
        return {name: t.result() for name, t in self.trackers.items()}

    def train_step(self, data: Any) -> dict[str, tf.Tensor]:
        x = self._x(data)
        variables = self.trained_variables()
        with tf.GradientTape() as tape:
            losses = self.compute_losses(x, training=True)
        grads = tape.gradient(losses["loss"], variables)
        self.optimizer.apply_gradients(zip(grads, variables))
        return self._record(losses)

    def test_step(self, data: Any) -> dict[str, tf.Tensor]:
        return self._record(self.compute_losses(self._x(data), training=False))


class EpochLog(keras.callbacks.Callback):
    """One log line per epoch (losses, learning rate, seconds)."""

    def __init__(self, model_name: str, epochs: int) -> None:
        super().__init__()
        self.model_name, self.epochs, self._t0 = model_name, epochs, 0.0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._t0 = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        parts = " ".join(f"{k}={float(v):.5g}" for k, v in sorted(logs.items()))
        logger.info("%s epoch %d/%d %s (%.1fs)", self.model_name, epoch + 1, self.epochs, parts, time.perf_counter() - self._t0)


def fit_trainer(
    trainer: LossTrainer,
    train_feed: ImageFeeder,
    val_feed: ImageFeeder | None,
    *,
    model_name: str,
    epochs: int,
    monitor: str,
    patience: int,
    lr_patience: int,
    lr_factor: float,
    min_lr: float,
    progress: bool,
    extra_callbacks: list[keras.callbacks.Callback] | None = None,
) -> dict[str, list[float]]:
    """Model.fit with early stopping + ReduceLROnPlateau on ``monitor`` (val_ when validation exists)."""
    if val_feed is None and monitor.startswith("val_"):
        monitor = monitor[len("val_"):]
    callbacks: list[keras.callbacks.Callback] = [EpochLog(model_name, epochs)]
    if lr_patience > 0:
        callbacks.append(
            keras.callbacks.ReduceLROnPlateau(monitor=monitor, factor=lr_factor, patience=lr_patience, min_lr=min_lr, mode="min", verbose=0)
        )
    if patience > 0:
        callbacks.append(
            keras.callbacks.EarlyStopping(monitor=monitor, patience=patience, mode="min", restore_best_weights=True, verbose=0)
        )
    callbacks.extend(extra_callbacks or [])
    # Adam's slots exist before the first trace: created inside it, they make tf.function trace the whole
    # train step a second time (seconds per fit); same variables, same zeros, same numbers.
    if not trainer.optimizer.built:
        trainer.optimizer.build(trainer.trained_variables())
    hist = trainer.fit(
        # the stream already orders each epoch's batches as Keras' shuffle would (shuffle=True on a dataset
        # would only be ignored, with a warning in every run's log)
        train_feed.training_dataset(epochs), steps_per_epoch=len(train_feed), shuffle=False,
        validation_data=val_feed, epochs=epochs, callbacks=callbacks, verbose=1 if progress else 0,
    )
    return {k: [float(v) for v in vals] for k, vals in hist.history.items()}
