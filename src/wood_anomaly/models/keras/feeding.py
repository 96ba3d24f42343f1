"""Data feeding: pre-processing (resize, grayscale, [0, 1]), per-epoch augmentation, the Keras PyDataset."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator
from typing import Any

import keras
import numpy as np
import tensorflow as tf


def preprocess(images: np.ndarray, image_size: int, grayscale: bool, brightness_reference: float | None = None) -> np.ndarray:
    """uint8 [N,H,W,3] -> float32 [N,S,S,C] in [0, 1] (antialiased bilinear resize, ITU gray).

    With ``brightness_reference`` each image is scaled so that its mean intensity equals it (per-image
    photometric normalisation: a board under brighter or dimmer light gives the same input).
    """
    x = tf.convert_to_tensor(images, dtype=tf.float32) / 255.0
    if images.shape[1] != image_size or images.shape[2] != image_size:
        x = tf.image.resize(x, (image_size, image_size), method="bilinear", antialias=True)
    if grayscale:
        x = tf.image.rgb_to_grayscale(x)
    if brightness_reference is not None:
        x = x * (float(brightness_reference) / (tf.reduce_mean(x, axis=(1, 2, 3), keepdims=True) + 1e-6))
    return tf.clip_by_value(x, 0.0, 1.0).numpy().astype(np.float32)


def mean_brightness(images: np.ndarray) -> float:
    """Median over images of the mean intensity in [0, 1] (the reference of per-image normalisation)."""
    return float(np.median(images.reshape(len(images), -1).mean(axis=1) / 255.0))


def resize_uint8(images: np.ndarray, image_size: int) -> np.ndarray:
    """Resize uint8 images to the model size once (augmentation then runs at the small size)."""
    if images.shape[1] == image_size and images.shape[2] == image_size:
        return images
    x = tf.image.resize(tf.convert_to_tensor(images, tf.float32), (image_size, image_size), antialias=True)
    return np.clip(np.rint(x.numpy()), 0, 255).astype(np.uint8)




def flip_batch(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random horizontal and vertical flips, each with p = 0.5, per image."""
    out = images.copy()
    for i in range(len(out)):
        if rng.random() < 0.5:
            out[i] = out[i, :, ::-1]
        if rng.random() < 0.5:
            out[i] = out[i, ::-1, :]
    return out


def make_augmenter(augmentation: dict[str, Any] | None, flips: bool) -> Callable[[np.ndarray, np.random.Generator], np.ndarray] | None:
    """uint8 batch transform applied each epoch: the shared augment.py config and/or flips."""
    steps: list[Callable[[np.ndarray, np.random.Generator], np.ndarray]] = []
    if augmentation:
        try:
            from wood_anomaly.data.augment import AugmentConfig, augment_batch
        except ImportError as err:  # pragma: no cover - depends on the other module being present
            raise ImportError(
                "augmentation params were given but wood_anomaly.data.augment (AugmentConfig, augment_batch) "
                f"cannot be imported: {err}"
            ) from err
        cfg = AugmentConfig.from_dict(dict(augmentation))
        steps.append(lambda imgs, rng: augment_batch(imgs, cfg, rng))
    if flips:
        steps.append(flip_batch)
    if not steps:
        return None

    def run(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        for step in steps:
            images = step(images, rng)
        return images

    return run


class ImageFeeder(keras.utils.PyDataset):
    """Batches of model inputs from uint8 images already at model size.

    With an augmenter and ``shuffle`` (training), every epoch draws a new seeded augmentation of the
    whole set (seed + epoch). Batches are near-equal (np.array_split), so BatchNorm never sees a
    1-image batch.
    """

    def __init__(
        self,
        images: np.ndarray,
        batch_size: int,
        to_input: Callable[[np.ndarray], np.ndarray],
        augmenter: Callable[[np.ndarray, np.random.Generator], np.ndarray] | None = None,
        shuffle: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.images, self.to_input, self.augmenter = images, to_input, augmenter
        self.shuffle, self.seed, self.epoch = shuffle, seed, 0
        self.n_batches = max(1, math.ceil(len(images) / batch_size))
        self._prepare()

    def _prepare(self) -> None:
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(len(self.images)) if self.shuffle else np.arange(len(self.images))
        imgs = self.images[order]
        if self.augmenter is not None:
            imgs = self.augmenter(imgs, rng)
        self._x = self.to_input(imgs)
        self._batches = np.array_split(np.arange(len(imgs)), self.n_batches)

    def __len__(self) -> int:
        return self.n_batches

    def __getitem__(self, index: int) -> np.ndarray:
        return self._x[self._batches[index]]

    def on_epoch_end(self) -> None:
        if self.shuffle or self.augmenter is not None:
            self.epoch += 1
            self._prepare()

    def training_batches(self, epochs: int) -> Iterator[np.ndarray]:
        """Every batch of ``epochs`` training epochs, in the order ``Model.fit(feeder)`` would train on them.

        Epoch k (1, 2, ...) trains on the k-th preparation of the set (Keras prepares a new one before its
        first epoch), its batches in an order drawn with Python's ``random`` (seeded by
        ``keras.utils.set_random_seed``), as Keras orders a shuffled PyDataset's batches.
        """
        for _ in range(int(epochs)):
            self.on_epoch_end()
            order = list(range(self.n_batches))
            random.shuffle(order)
            for index in order:
                yield self[index]

    def training_dataset(self, epochs: int) -> tf.data.Dataset:
        """:meth:`training_batches` as one ``tf.data`` stream for ``fit(..., steps_per_epoch=len(self))``.

        One iterator serves every epoch: ``fit`` on the PyDataset builds a new ``tf.data`` iterator each
        epoch, which cost a light model (the VAE at 128 px) about a fifth of its training time. The next
        epoch is prepared in the stream's thread while the current one trains.
        """
        sample = self[0]
        spec = tf.TensorSpec((None, *sample.shape[1:]), tf.as_dtype(sample.dtype))
        return tf.data.Dataset.from_generator(lambda: self.training_batches(epochs), output_signature=spec).prefetch(1)
