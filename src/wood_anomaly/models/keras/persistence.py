"""What makes a saved ``.h5`` network self-sufficient: the :class:`ConfigCarrier` layer and its payload.

:class:`ConfigCarrier` is an identity layer whose Keras config holds the model's params and fitted
constants as JSON, so that everything needed to score survives a ``.h5`` round trip inside the saved
``keras.Model`` itself (no side files).

The catalog stores each network with kedro-datasets ``tensorflow.TensorFlowModelDataset``::

    type: tensorflow.TensorFlowModelDataset
    filepath: data/06_models/<model>/<artifact>.h5
    versioned: true
    save_args: {save_format: h5, include_optimizer: false}
    load_args: {compile: false}

The custom layers are registered (``keras.saving.register_keras_serializable``, package
``wood_anomaly``) when this module is imported; :data:`CUSTOM_OBJECTS` is the same mapping for
``load_args: {custom_objects: ...}`` where the module cannot be imported first.
"""

from __future__ import annotations

import json
from typing import Any

import keras

CONFIG_LAYER_NAME = "wood_anomaly_config"
FORMAT_VERSION = 1


@keras.saving.register_keras_serializable(package="wood_anomaly")
class ConfigCarrier(keras.layers.Layer):
    """Identity layer whose config carries a JSON payload (model params + fitted constants).

    Placed right after the input of the saved networks so that ``.h5`` files keep it.
    """

    def __init__(self, payload: str = "{}", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.payload = payload

    def call(self, inputs):  # noqa: D102
        return inputs

    def compute_output_shape(self, input_shape):  # noqa: D102
        return input_shape

    def get_config(self) -> dict[str, Any]:  # noqa: D102
        return {**super().get_config(), "payload": self.payload}


CUSTOM_OBJECTS: dict[str, type] = {"wood_anomaly>ConfigCarrier": ConfigCarrier}


def register_custom_object(cls: type) -> type:
    """Register a layer class for loading (keras registry + :data:`CUSTOM_OBJECTS`)."""
    cls = keras.saving.register_keras_serializable(package="wood_anomaly")(cls)
    CUSTOM_OBJECTS[f"wood_anomaly>{cls.__name__}"] = cls
    return cls


def write_payload(model: keras.Model, payload: dict[str, Any]) -> None:
    model.get_layer(CONFIG_LAYER_NAME).payload = json.dumps(payload, sort_keys=True)


def read_payload(model: keras.Model, what: str) -> dict[str, Any]:
    """The JSON payload of a network built by this package; clear error otherwise."""
    if not isinstance(model, keras.Model):
        raise TypeError(f"{what}: expected a keras.Model, got {type(model).__name__}")
    try:
        layer = model.get_layer(CONFIG_LAYER_NAME)
    except ValueError as err:
        raise ValueError(
            f"{what}: keras model {model.name!r} has no {CONFIG_LAYER_NAME!r} layer; it was not saved by "
            "wood_anomaly (or was saved before its fit finished)"
        ) from err
    payload = json.loads(layer.payload)
    if payload.get("format") != FORMAT_VERSION:
        raise ValueError(f"{what}: config format {payload.get('format')!r}, expected {FORMAT_VERSION}")
    return payload
