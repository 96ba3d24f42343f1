"""TensorFlow set-up for the Keras models: quiet logs, CPU threads, GPU memory growth, device scope.

Importing this module imports TensorFlow without its native start-up lines
(:func:`wood_anomaly.quiet.import_tensorflow`) and configures it once.
"""

from __future__ import annotations

import contextlib
import logging
import os

from wood_anomaly.quiet import import_tensorflow

tf = import_tensorflow()


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
