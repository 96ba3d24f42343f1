"""Building blocks of the Keras networks: the config-carrying input and a fast-settling BatchNorm."""

from __future__ import annotations

import keras

from .persistence import CONFIG_LAYER_NAME, ConfigCarrier


def config_input(shape: tuple[int, ...], name: str = "image") -> tuple[keras.KerasTensor, keras.KerasTensor]:
    """An Input followed by the :class:`ConfigCarrier`; returns (input, carried tensor)."""
    inp = keras.Input(shape=shape, name=name)
    return inp, ConfigCarrier(name=CONFIG_LAYER_NAME)(inp)


BN_MOMENTUM = 0.9  # Keras' 0.99 needs hundreds of steps; a 63-image set gives 4 steps per epoch


def batch_norm(name: str | None = None) -> keras.layers.BatchNormalization:
    """BatchNormalization whose moving statistics settle within a few epochs of a small data set."""
    return keras.layers.BatchNormalization(momentum=BN_MOMENTUM, name=name)


