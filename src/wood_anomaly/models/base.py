"""What every model shares: the AnomalyModel protocol, device choice and seeding."""

from __future__ import annotations

import logging
import os
import random
from typing import Any, Protocol, runtime_checkable

import numpy as np

logger = logging.getLogger(__name__)


@runtime_checkable
class AnomalyModel(Protocol):
    """A model trained on good images only; higher scores mean more anomalous."""

    name: str
    history: dict[str, list[float]]

    def fit(self, train_images: np.ndarray, val_images: np.ndarray | None = None, **kwargs: Any) -> AnomalyModel: ...

    def score(self, images: np.ndarray, *, batch_size: int = 16) -> tuple[np.ndarray, np.ndarray]: ...

    def to_artifacts(self) -> dict[str, Any]: ...

    @classmethod
    def from_artifacts(cls, **artifacts: Any) -> AnomalyModel: ...


def resolve_device(device: str = "auto") -> str:
    """'auto' -> 'cuda' when PyTorch sees a GPU, else 'cpu'. An explicit 'cuda' without a GPU is an error."""
    import torch

    if device in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device={device!r} was asked for, but PyTorch sees no CUDA GPU on this machine")
    return str(device)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy, PyTorch and (when imported) TensorFlow for repeatable runs."""
    random.seed(seed)
    np.random.seed(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)
    try:
        import torch

        torch.manual_seed(seed)
        if torch.cuda.is_available():
            torch.cuda.manual_seed_all(seed)
    except ImportError:  # pragma: no cover - torch is a hard dependency
        pass
    import sys

    if "tensorflow" in sys.modules or "keras" in sys.modules:
        import keras

        keras.utils.set_random_seed(seed)


def check_images(images: np.ndarray, what: str = "images") -> np.ndarray:
    """Validate the shared image format: uint8 [N, H, W, 3]."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"{what}: expected an array of shape [N, H, W, 3], got {images.shape}")
    if images.dtype != np.uint8:
        raise ValueError(f"{what}: expected uint8 pixels, got {images.dtype}")
    if len(images) == 0:
        raise ValueError(f"{what}: no images")
    return images


def set_cpu_threads(num_threads: int | None) -> None:
    """Cap PyTorch's and FAISS's CPU threads (None = leave the libraries' defaults: all cores).

    On a CPU shared with other busy processes, one thread per process is often faster than
    several threads that wait on each other.
    """
    if not num_threads:
        return
    import torch

    torch.set_num_threads(int(num_threads))
    try:
        import faiss

        faiss.omp_set_num_threads(int(num_threads))
    except ImportError:  # pragma: no cover - faiss is a hard dependency
        pass


def merge_config(model_name: str, defaults: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """``defaults`` updated with ``config``; a key the model does not know is an error (a typo in params)."""
    unknown = sorted(set(config) - set(defaults))
    if unknown:
        raise ValueError(f"{model_name}: unknown config key(s) {unknown}; known: {sorted(defaults)}")
    return {**defaults, **config}
