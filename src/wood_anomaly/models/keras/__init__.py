"""Shared pieces of the Keras 3 / TensorFlow reconstruction models (AutoEncoder, VAE, GANomaly),
split by concern so that each model file only holds its networks and losses:

- :mod:`.tf_setup`: TensorFlow set-up (quiet logs, 2 threads, GPU memory growth, device scope).
- :mod:`.persistence`: :class:`ConfigCarrier`, the layer whose config carries the model's params and
  fitted constants through a ``.h5`` round trip; custom-object registration.
- :mod:`.layers`: the config-carrying input, BatchNorm that settles on small sets.
- :mod:`.feeding`: pre-processing and :class:`ImageFeeder` (re-augments the training set every epoch).
- :mod:`.training`: :class:`LossTrainer` (``train_step`` over a dict of losses), ``fit_trainer``.
- :mod:`.maps`: MSE / SSIM / gradient error maps, smoothing, score aggregation.
- :mod:`.base`: :class:`KerasReconstructionModel`, the AnomalyModel the three models share.
"""

from .tf_setup import configure_tensorflow, tf_device_name, tf_device_scope  # noqa: I001 - TF set-up first
from .persistence import (
    CONFIG_LAYER_NAME,
    CUSTOM_OBJECTS,
    FORMAT_VERSION,
    ConfigCarrier,
    read_payload,
    register_custom_object,
    write_payload,
)
from .layers import BN_MOMENTUM, batch_norm, config_input
from .feeding import ImageFeeder, flip_batch, make_augmenter, preprocess, resize_uint8
from .maps import AGGREGATIONS, MAP_KINDS, aggregate, colorize, parse_map_kind, raw_error_maps, smooth, ssim_map, upsample
from .training import EpochLog, LossTrainer, fit_trainer
from .base import KerasReconstructionModel

__all__ = [
    "AGGREGATIONS", "BN_MOMENTUM", "CONFIG_LAYER_NAME", "CUSTOM_OBJECTS", "FORMAT_VERSION", "MAP_KINDS",
    "ConfigCarrier", "EpochLog", "ImageFeeder", "KerasReconstructionModel", "LossTrainer", "aggregate",
    "batch_norm", "colorize", "config_input", "configure_tensorflow", "fit_trainer", "flip_batch",
    "make_augmenter", "parse_map_kind", "preprocess", "raw_error_maps", "read_payload",
    "register_custom_object", "resize_uint8", "smooth", "ssim_map", "tf_device_name", "tf_device_scope",
    "upsample", "write_payload",
]
