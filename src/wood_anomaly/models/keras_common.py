"""Shared pieces of the Keras 3 / TensorFlow reconstruction models (AutoEncoder, VAE, GANomaly).

What lives here (so that each model file only holds its networks and losses):

- TensorFlow set-up (quiet logs, 2 threads, device scope).
- :class:`ConfigCarrier`: an identity layer whose Keras config holds the model's params and fitted
  constants as JSON, so that everything needed to score survives a ``.h5`` round trip inside the
  saved ``keras.Model`` itself (no side files).
- Pre-processing (resize, grayscale, [0, 1]), SSIM / MSE error maps, smoothing, score aggregation.
- :class:`ImageFeeder`: a ``keras.utils.PyDataset`` that re-augments the training images every epoch.
- :class:`LossTrainer`: a ``keras.Model`` wrapper with a generic ``train_step``/``test_step`` over a
  dict of losses, used with ``Model.fit`` (callbacks: early stopping, ReduceLROnPlateau, epoch log).
- :class:`KerasReconstructionModel`: the AnomalyModel implementation shared by the three models.

Saving: the catalog stores each artifact with kedro-datasets ``tensorflow.TensorFlowModelDataset``::

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

import contextlib
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from scipy.ndimage import gaussian_filter  # noqa: E402

from wood_anomaly.models.base import check_images, merge_config  # noqa: E402

logger = logging.getLogger(__name__)

CONFIG_LAYER_NAME = "wood_anomaly_config"
FORMAT_VERSION = 1
MAP_KINDS = ("mse", "ssim", "grad")
AGGREGATIONS = ("max", "topk")


# --------------------------------------------------------------------------------------- TF set-up
def configure_tensorflow(threads: int | None = None) -> None:
    """Quiet TF logs, cap its CPU threads (env ``WOOD_TF_THREADS``, default 2), GPU memory growth on.

    Thread counts can only be set before TensorFlow's runtime starts; later calls are no-ops.
    """
    n = int(threads or os.environ.get("WOOD_TF_THREADS", 2))
    with contextlib.suppress(RuntimeError):
        tf.config.threading.set_intra_op_parallelism_threads(n)
        tf.config.threading.set_inter_op_parallelism_threads(n)
    # Grow GPU memory on demand so the PyTorch models in the same process keep theirs.
    for gpu in tf.config.list_physical_devices("GPU"):
        with contextlib.suppress(RuntimeError, ValueError):
            tf.config.experimental.set_memory_growth(gpu, True)
    tf.get_logger().setLevel(logging.ERROR)


configure_tensorflow()


def tf_device_scope(device: str | None = "auto") -> contextlib.AbstractContextManager:
    """'auto' -> TensorFlow's default placement (GPU when it sees one); 'cpu'; 'cuda'/'gpu' (must exist)."""
    device = (device or "auto").lower()
    if device == "auto":
        return contextlib.nullcontext()
    if device == "cpu":
        return tf.device("/CPU:0")
    if device.startswith(("cuda", "gpu")):
        gpus = tf.config.list_physical_devices("GPU")
        if not gpus:
            raise RuntimeError(f"device={device!r} was asked for, but TensorFlow sees no GPU on this machine")
        index = device.split(":")[1] if ":" in device else "0"
        return tf.device(f"/GPU:{index}")
    raise ValueError(f"unknown device {device!r}: use 'auto', 'cpu' or 'cuda[:i]'")


def tf_device_name(device: str | None = "auto") -> str:
    """The device actually used, for training summaries."""
    if (device or "auto").lower() == "cpu":
        return "cpu"
    return "cuda" if tf.config.list_physical_devices("GPU") else "cpu"


# ------------------------------------------------------------------------------- custom layers
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


def config_input(shape: tuple[int, ...], name: str = "image") -> tuple[keras.KerasTensor, keras.KerasTensor]:
    """An Input followed by the :class:`ConfigCarrier`; returns (input, carried tensor)."""
    inp = keras.Input(shape=shape, name=name)
    return inp, ConfigCarrier(name=CONFIG_LAYER_NAME)(inp)


BN_MOMENTUM = 0.9  # Keras' 0.99 needs hundreds of steps; a 63-image set gives 4 steps per epoch


def batch_norm(name: str | None = None) -> keras.layers.BatchNormalization:
    """BatchNormalization whose moving statistics settle within a few epochs of a small data set."""
    return keras.layers.BatchNormalization(momentum=BN_MOMENTUM, name=name)


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


# ---------------------------------------------------------------------------- pre-processing / maps
def preprocess(images: np.ndarray, image_size: int, grayscale: bool) -> np.ndarray:
    """uint8 [N,H,W,3] -> float32 [N,S,S,C] in [0, 1] (antialiased bilinear resize, ITU gray)."""
    x = tf.convert_to_tensor(images, dtype=tf.float32) / 255.0
    if images.shape[1] != image_size or images.shape[2] != image_size:
        x = tf.image.resize(x, (image_size, image_size), method="bilinear", antialias=True)
    if grayscale:
        x = tf.image.rgb_to_grayscale(x)
    return tf.clip_by_value(x, 0.0, 1.0).numpy().astype(np.float32)


def resize_uint8(images: np.ndarray, image_size: int) -> np.ndarray:
    """Resize uint8 images to the model size once (augmentation then runs at the small size)."""
    if images.shape[1] == image_size and images.shape[2] == image_size:
        return images
    x = tf.image.resize(tf.convert_to_tensor(images, tf.float32), (image_size, image_size), antialias=True)
    return np.clip(np.rint(x.numpy()), 0, 255).astype(np.uint8)


def _gaussian_kernel(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    ax = np.arange(size, dtype=np.float64) - (size - 1) / 2
    g = np.exp(-(ax**2) / (2 * sigma**2))
    g /= g.sum()
    return np.outer(g, g).astype(np.float32)


def ssim_map(x: tf.Tensor, y: tf.Tensor, size: int = 11, sigma: float = 1.5) -> tf.Tensor:
    """Per-pixel SSIM [N,H,W,C] (Gaussian window, reflect padding, data range 1). Differentiable."""
    channels = x.shape[-1]
    k = _gaussian_kernel(size, sigma)[:, :, None, None]
    kernel = tf.constant(np.tile(k, (1, 1, channels, 1)))
    pad = size // 2

    def blur(t: tf.Tensor) -> tf.Tensor:
        t = tf.pad(t, [[0, 0], [pad, pad], [pad, pad], [0, 0]], mode="REFLECT")
        return tf.nn.depthwise_conv2d(t, kernel, strides=[1, 1, 1, 1], padding="VALID")

    c1, c2 = 0.01**2, 0.03**2
    mx, my = blur(x), blur(y)
    sxx = blur(x * x) - mx * mx
    syy = blur(y * y) - my * my
    sxy = blur(x * y) - mx * my
    return ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))


def _sobel_magnitude(x: tf.Tensor) -> tf.Tensor:
    edges = tf.image.sobel_edges(x)  # [N,H,W,C,2]
    return tf.sqrt(tf.reduce_sum(edges**2, axis=-1) + 1e-12)


def raw_error_maps(x: np.ndarray, recon: np.ndarray, kinds: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Per-pixel error maps [N,S,S] of each kind, channel-averaged, before normalisation."""
    xt, rt = tf.constant(x), tf.constant(recon)
    out: dict[str, np.ndarray] = {}
    for kind in kinds:
        if kind == "mse":
            m = tf.reduce_mean(tf.square(xt - rt), axis=-1)
        elif kind == "ssim":
            m = tf.reduce_mean(1.0 - ssim_map(xt, rt), axis=-1)
        elif kind == "grad":
            m = tf.reduce_mean(tf.abs(_sobel_magnitude(xt) - _sobel_magnitude(rt)), axis=-1)
        else:
            raise ValueError(f"unknown map kind {kind!r}; known: {MAP_KINDS}")
        out[kind] = m.numpy().astype(np.float32)
    return out


def parse_map_kind(map_kind: str) -> tuple[str, ...]:
    """'mse+ssim' -> ('mse', 'ssim'), validated."""
    kinds = tuple(k.strip() for k in str(map_kind).split("+") if k.strip())
    bad = [k for k in kinds if k not in MAP_KINDS]
    if not kinds or bad:
        raise ValueError(f"map_kind {map_kind!r}: use one or more of {MAP_KINDS} joined by '+'")
    return kinds


def smooth(maps: np.ndarray, sigma: float) -> np.ndarray:
    if sigma <= 0:
        return maps.astype(np.float32)
    return gaussian_filter(maps, sigma=(0, sigma, sigma), mode="reflect").astype(np.float32)


def aggregate(maps: np.ndarray, how: str, topk_fraction: float) -> np.ndarray:
    """Image score from a map batch [N,h,w]: 'max' or 'topk' (mean of the top fraction of pixels)."""
    flat = maps.reshape(len(maps), -1)
    if how == "max":
        return flat.max(axis=1).astype(np.float32)
    if how == "topk":
        k = max(1, int(round(topk_fraction * flat.shape[1])))
        part = np.partition(flat, flat.shape[1] - k, axis=1)[:, -k:]
        return part.mean(axis=1).astype(np.float32)
    raise ValueError(f"unknown aggregation {how!r}; known: {AGGREGATIONS}")


def upsample(maps: np.ndarray, height: int, width: int) -> np.ndarray:
    if maps.shape[1:] == (height, width):
        return maps.astype(np.float32)
    t = tf.image.resize(tf.constant(maps)[..., None], (height, width), method="bilinear")
    return t.numpy()[..., 0].astype(np.float32)


def colorize(values: np.ndarray, vmax: float) -> np.ndarray:
    """[h,w] float -> uint8 RGB with matplotlib's 'jet' colormap, scaled to [0, vmax]."""
    from matplotlib import colormaps

    v = np.clip(values / max(vmax, 1e-12), 0.0, 1.0)
    return (colormaps["jet"](v)[..., :3] * 255).astype(np.uint8)


# ------------------------------------------------------------------------------------ data feeding
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


# ------------------------------------------------------------------------------------ training
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
    hist = trainer.fit(
        train_feed, validation_data=val_feed, epochs=epochs, callbacks=callbacks, verbose=1 if progress else 0
    )
    return {k: [float(v) for v in vals] for k, vals in hist.history.items()}


# ------------------------------------------------------------------------------- the model base
class KerasReconstructionModel:
    """AnomalyModel shared by the Keras reconstruction models.

    Subclasses set ``name``, ``artifact_names`` (first one carries the config), ``DEFAULTS`` and
    implement :meth:`build_networks`, :meth:`make_trainer` and :meth:`reconstruct`.
    """

    name: ClassVar[str] = ""
    artifact_names: ClassVar[tuple[str, ...]] = ()
    COMMON_DEFAULTS: ClassVar[dict[str, Any]] = {
        "image_size": 128,
        "grayscale": False,
        "epochs": 60,
        "batch_size": 16,
        "learning_rate": 1e-3,
        "beta_1": 0.9,
        "patience": 15,  # early stopping on the monitored val loss (0 = off)
        "lr_patience": 6,  # ReduceLROnPlateau (0 = off)
        "lr_factor": 0.5,
        "min_lr": 1e-6,
        "monitor": "val_loss",
        "flips": True,
        "augmentation": None,  # dict for wood_anomaly.data.augment.AugmentConfig.from_dict, or None
        "map_kind": "mse",  # 'mse', 'ssim', 'grad' or a '+' combination (each normalised on val)
        "map_sigma": 2.0,  # Gaussian smoothing, in model pixels
        "aggregation": "max",  # 'max' or 'topk'
        "topk_fraction": 0.01,
    }
    DEFAULTS: ClassVar[dict[str, Any]] = {}

    def __init__(self, **config: Any) -> None:
        self.config: dict[str, Any] = merge_config(type(self).__name__, {**self.COMMON_DEFAULTS, **self.DEFAULTS}, config)
        self.kinds = parse_map_kind(self.config["map_kind"])
        if self.config["aggregation"] not in AGGREGATIONS:
            raise ValueError(f"{type(self).__name__}: aggregation must be one of {AGGREGATIONS}")
        if int(self.config["image_size"]) % 16:
            raise ValueError(f"{type(self).__name__}: image_size must be a multiple of 16, got {self.config['image_size']}")
        self.networks: dict[str, keras.Model] = {}
        self.fitted: dict[str, Any] = {}
        self.history: dict[str, list[float]] = {}
        self.fit_seconds: float | None = None
        self.device_used: str | None = None

    # -- subclass hooks ---------------------------------------------------------------------
    @property
    def input_shape(self) -> tuple[int, int, int]:
        s = int(self.config["image_size"])
        return (s, s, 1 if self.config["grayscale"] else 3)

    def build_networks(self) -> dict[str, keras.Model]:
        raise NotImplementedError

    def make_trainer(self) -> tuple[LossTrainer, list[keras.callbacks.Callback]]:
        raise NotImplementedError

    def reconstruct(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(reconstruction [n,S,S,C] float32, optional extra per-image score term [n]) for one batch."""
        raise NotImplementedError

    # -- helpers -----------------------------------------------------------------------------
    def to_input(self, images_u8: np.ndarray) -> np.ndarray:
        return preprocess(images_u8, int(self.config["image_size"]), bool(self.config["grayscale"]))

    def optimizer(self) -> keras.optimizers.Optimizer:
        return keras.optimizers.Adam(learning_rate=float(self.config["learning_rate"]), beta_1=float(self.config["beta_1"]))

    def _require_fitted(self) -> None:
        if not self.networks:
            raise RuntimeError(f"{type(self).__name__}: call fit() or from_artifacts() before scoring")

    # -- AnomalyModel ------------------------------------------------------------------------
    def fit(
        self,
        train_images: np.ndarray,
        val_images: np.ndarray | None = None,
        *,
        seed: int = 0,
        device: str = "auto",
        progress: bool = True,
    ) -> KerasReconstructionModel:
        train_images = check_images(train_images, "train_images")
        if val_images is not None and len(val_images) == 0:
            val_images = None
        if val_images is not None:
            val_images = check_images(val_images, "val_images")
        cfg = self.config
        size = int(cfg["image_size"])
        keras.utils.set_random_seed(int(seed))
        start = time.perf_counter()
        with tf_device_scope(device):
            self.networks = self.build_networks()
            trainer, extra_callbacks = self.make_trainer()
            train_feed = ImageFeeder(
                resize_uint8(train_images, size),
                int(cfg["batch_size"]),
                self.to_input,
                augmenter=make_augmenter(cfg["augmentation"], bool(cfg["flips"])),
                shuffle=True,
                seed=int(seed),
            )
            val_feed = None
            if val_images is not None:
                val_feed = ImageFeeder(resize_uint8(val_images, size), int(cfg["batch_size"]), self.to_input)
            logger.info(
                "%s: training on %d images (%d val) at %dx%dx%d for up to %d epochs, device=%s",
                self.name, len(train_images), 0 if val_images is None else len(val_images), *self.input_shape,
                int(cfg["epochs"]), tf_device_name(device),
            )
            self.history = fit_trainer(
                trainer, train_feed, val_feed, model_name=self.name, epochs=int(cfg["epochs"]),
                monitor=str(cfg["monitor"]), patience=int(cfg["patience"]), lr_patience=int(cfg["lr_patience"]),
                lr_factor=float(cfg["lr_factor"]), min_lr=float(cfg["min_lr"]), progress=progress,
                extra_callbacks=extra_callbacks,
            )
            # Normalisation constants of each map kind (and the extra term) on good held-out images.
            self.fitted = self._normalisers(val_images if val_images is not None else train_images)
        self.fit_seconds = time.perf_counter() - start
        self.device_used = tf_device_name(device)
        self._write_payloads()
        return self

    SCORING_PARAMS: ClassVar[tuple[str, ...]] = ("map_kind", "map_sigma", "aggregation", "topk_fraction", "latent_weight")

    def set_scoring(self, reference_images: np.ndarray, **changes: Any) -> KerasReconstructionModel:
        """Change score-only params (map_kind, map_sigma, aggregation, topk_fraction, latent_weight) of a
        fitted model without retraining; normalisation constants are recomputed on ``reference_images``
        (good images held out of training, e.g. the validation set)."""
        self._require_fitted()
        bad = sorted(k for k in changes if k not in self.SCORING_PARAMS or k not in self.config)
        if bad:
            raise ValueError(f"{type(self).__name__}.set_scoring: {bad} are not score-only params of this model")
        kinds = parse_map_kind(changes.get("map_kind", self.config["map_kind"]))
        if changes.get("aggregation", self.config["aggregation"]) not in AGGREGATIONS:
            raise ValueError(f"{type(self).__name__}: aggregation must be one of {AGGREGATIONS}")
        self.config.update(changes)
        self.kinds = kinds
        self.fitted = self._normalisers(check_images(reference_images, "reference_images"))
        self._write_payloads()
        return self

    def _normalisers(self, images: np.ndarray, batch_size: int = 16) -> dict[str, Any]:
        sums = {k: 0.0 for k in self.kinds}
        extra: list[np.ndarray] = []
        for x in self._batches(images, batch_size):
            recon, ext = self.reconstruct(x)
            for k, m in raw_error_maps(x, recon, self.kinds).items():
                sums[k] += float(m.astype(np.float64).sum())
            if ext is not None:
                extra.append(ext)
        n_pix = len(images) * self.input_shape[0] * self.input_shape[1]
        norms = {k: max(v / n_pix, 1e-12) for k, v in sums.items()}
        extra_norm = float(np.mean(np.concatenate(extra))) if extra else 1.0
        return {"map_norm": norms, "extra_norm": max(extra_norm, 1e-12)}

    def _batches(self, images: np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
        for i in range(0, len(images), batch_size):
            yield self.to_input(images[i : i + batch_size])

    def _maps_small(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(reconstruction, smoothed normalised map at model size, extra term) for one batch."""
        recon, extra = self.reconstruct(x)
        raw = raw_error_maps(x, recon, self.kinds)
        norms = self.fitted["map_norm"]
        m = sum(raw[k] / float(norms[k]) for k in self.kinds) / len(self.kinds)
        return recon, smooth(m, float(self.config["map_sigma"])), extra

    def score(self, images: np.ndarray, *, batch_size: int = 16) -> tuple[np.ndarray, np.ndarray]:
        """(scores float32 [N], maps float32 [N,H,W] at the input resolution)."""
        self._require_fitted()
        images = check_images(images, "images")
        h, w = images.shape[1:3]
        scores, maps = [], []
        for x in self._batches(images, batch_size):
            _, m, extra = self._maps_small(x)
            s = aggregate(m, self.config["aggregation"], float(self.config["topk_fraction"]))
            if extra is not None:
                s = s + float(self.config.get("latent_weight", 0.0)) * extra / float(self.fitted["extra_norm"])
            scores.append(s.astype(np.float32))
            maps.append(upsample(m, h, w))
        return np.concatenate(scores).astype(np.float32), np.concatenate(maps).astype(np.float32)

    def reconstruction_grid(self, images: np.ndarray, max_images: int = 8) -> np.ndarray:
        """uint8 RGB grid: row 1 originals, row 2 reconstructions, row 3 error maps (model size)."""
        self._require_fitted()
        images = check_images(images, "images")[:max_images]
        x = self.to_input(images)
        recon, m, _ = self._maps_small(x)

        def rgb(a: np.ndarray) -> np.ndarray:
            a = np.clip(a * 255.0, 0, 255).astype(np.uint8)
            return np.repeat(a, 3, axis=-1) if a.shape[-1] == 1 else a

        vmax = float(np.percentile(m, 99.5)) if m.size else 1.0
        rows = [rgb(x), rgb(recon), np.stack([colorize(mi, vmax) for mi in m])]
        s, gap = x.shape[1], 2
        n = len(x)
        grid = np.full((3 * s + 2 * gap, n * s + (n - 1) * gap, 3), 255, np.uint8)
        for r, row in enumerate(rows):
            for c in range(n):
                grid[r * (s + gap) : r * (s + gap) + s, c * (s + gap) : c * (s + gap) + s] = row[c]
        return grid

    # -- artifacts -----------------------------------------------------------------------------
    def _payload(self) -> dict[str, Any]:
        return {"format": FORMAT_VERSION, "model": self.name, "params": self.config, "fitted": self.fitted}

    def _write_payloads(self) -> None:
        payload = self._payload()
        for net in self.networks.values():
            with contextlib.suppress(ValueError):
                write_payload(net, payload)

    def to_artifacts(self) -> dict[str, keras.Model]:
        self._require_fitted()
        self._write_payloads()
        return {k: self.networks[k] for k in self.artifact_names}

    @classmethod
    def from_artifacts(cls, **artifacts: Any) -> KerasReconstructionModel:
        missing = [k for k in cls.artifact_names if k not in artifacts]
        extra = sorted(set(artifacts) - set(cls.artifact_names))
        if missing or extra:
            raise ValueError(f"{cls.__name__}.from_artifacts: expected {list(cls.artifact_names)}, missing {missing}, unexpected {extra}")
        payload = read_payload(artifacts[cls.artifact_names[0]], f"{cls.name}.{cls.artifact_names[0]}")
        if payload["model"] != cls.name:
            raise ValueError(f"{cls.__name__}.from_artifacts: artifact was saved by model {payload['model']!r}, not {cls.name!r}")
        model = cls(**payload["params"])
        model.fitted = payload["fitted"]
        model.networks = dict(artifacts)
        return model
