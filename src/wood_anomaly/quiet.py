"""Quiet runs: silence exactly the known, harmless start-up and save messages of our dependencies.

Each entry below names the library that prints it and why it is harmless here. Anything else still
shows. Set ``WOOD_VERBOSE=1`` to see everything (nothing is filtered, TensorFlow's native start-up
lines included).

- TensorFlow 2.21 logs through absl before its logging is initialised, so ``TF_CPP_MIN_LOG_LEVEL``
  does not hide its start-up lines (oneDNN notice, "Could not find cuda drivers", failed ``cuInit``
  on a CPU-only machine). :func:`import_tensorflow` imports it with the process's native stderr
  pointed at /dev/null for the length of the import and the GPU probe only.
- Keras 3 warns twice on every ``.h5`` save made by kedro-datasets' ``TensorFlowModelDataset``
  (``save_format`` is passed through; ``.h5`` is "legacy"). We keep ``.h5`` on purpose (the format
  the project documents) and the dataset needs ``save_format: h5`` to pick its reader, so those two
  absl log records are dropped.
- MLflow warns "Add type hints to the `predict` method" when kedro-mlflow defines its pipeline model
  class (we do not log pyfunc models from it); OmegaConf warns that ``register_new_resolver`` is
  deprecated each time Kedro or kedro-mlflow registers a resolver; Kedro warns that dataset names
  contain '.' (the reporting pipeline waits for ``<model>.metrics``, a namespaced name, on purpose).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from collections.abc import Iterator
from typing import Any

#: (message regex, category, module regex) given to warnings.filterwarnings.
KNOWN_WARNINGS: tuple[tuple[str, type[Warning], str], ...] = (
    (r".*Add type hints to the `predict` method", UserWarning, r"mlflow\."),
    (r"register_new_resolver\(\) is deprecated", UserWarning, r""),
    (r"One or more dataset names contain '\.' characters", UserWarning, r"kedro\."),
)

#: beginnings of absl (Python) log records dropped from the "absl" logger (Keras' saving_api).
KNOWN_ABSL_RECORDS: tuple[str, ...] = (
    "The `save_format` argument is deprecated in Keras 3.",
    "You are saving your model as an HDF5 file via `model.save()`",
)


class KedroCliPlugin:
    """Registered as a ``kedro.cli_hooks`` entry point (pyproject.toml) only so that the ``kedro`` command
    imports this package, and so installs the filters, before it loads the plugins' commands (importing
    kedro-mlflow's CLI is what triggers MLflow's type-hint warning). It implements no CLI hook."""


cli_plugin = KedroCliPlugin()


def verbose() -> bool:
    return os.environ.get("WOOD_VERBOSE", "").lower() in {"1", "true", "yes"}


class _DropKnownRecords(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:  # noqa: A003 - logging API
        message = str(record.msg)
        return not message.startswith(KNOWN_ABSL_RECORDS)


class _DropKnownWarnings(logging.Filter):
    """For warnings routed to logging (Kedro turns on ``logging.captureWarnings``): MLflow shows its
    type-hint warning inside ``catch_warnings(); simplefilter("once")``, which overrides any
    ``filterwarnings("ignore")``, so it is dropped here, where it is logged ("py.warnings")."""

    def filter(self, record: logging.LogRecord) -> bool:  # noqa: A003 - logging API
        import re

        text = record.getMessage()
        return not any(re.search(message.lstrip(".*"), text) for message, _, _ in KNOWN_WARNINGS)


_installed = False


def install() -> None:
    """Install the filters (idempotent; a no-op with ``WOOD_VERBOSE=1``)."""
    global _installed
    if _installed or verbose():
        return
    for message, category, module in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)
    logging.getLogger("absl").addFilter(_DropKnownRecords())
    logging.getLogger("py.warnings").addFilter(_DropKnownWarnings())
    _installed = True


@contextlib.contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """Point file descriptor 2 at /dev/null for the block (C/C++ libraries write there directly)."""
    if verbose():
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no real fd 2 (some notebook / IDE consoles)
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def import_tensorflow() -> Any:
    """``import tensorflow`` without its native start-up lines; also probes the GPUs (``cuInit``) once.

    A failing import still raises as usual (the Python traceback is not affected).
    """
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    with native_stderr_silenced():
        import tensorflow as tf

        tf.config.list_physical_devices("GPU")  # CUDA platform start-up: its messages go quiet too
    return tf
