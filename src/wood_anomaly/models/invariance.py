"""Invariance helpers shared by the feature-bank models (PatchCore, PaDiM): which copies of the
training boards go into the bank / Gaussian statistics, and test-time averaging over flips.

A board on a production line may pass turned left-right, upside down or both, and under drifting
light. A model that has seen only one orientation and one light flags such a good board. The
feature-bank models get invariance cheaply by fitting on transformed copies of the good training
boards (the coreset keeps PatchCore's bank small), and optionally by averaging their anomaly maps
over flipped copies of the test image (test-time augmentation, TTA: cost x number of flips).

- flips: ``"none"``, ``"h"`` (left-right), ``"v"`` (top-bottom), ``"hv"`` (both = 180 degrees);
- photometric copies: ``[brightness, contrast]`` factor pairs, optionally ``[brightness, contrast,
  blur_sigma]`` (blur, then contrast around the image mean, then brightness, clipped to 0..255: the
  same transforms as :mod:`wood_anomaly.data.nuisances`).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Hashable, Iterator, Sequence
from typing import Any

import numpy as np

from wood_anomaly.data.nuisances import apply_nuisance

FLIPS: dict[str, tuple[int, ...]] = {"none": (), "h": (2,), "v": (1,), "hv": (1, 2)}  # axes of [N, H, W, C]


def check_flips(model: str, key: str, flips: Any) -> list[str]:
    """A list of flip names (unknown names are an error naming the model and the key)."""
    if isinstance(flips, str):
        flips = [flips]
    flips = [str(f) for f in (flips or [])]
    bad = [f for f in flips if f not in FLIPS]
    if bad:
        raise ValueError(f"{model}: {key} {bad} not in {sorted(FLIPS)}")
    return flips


def check_photometric(model: str, key: str, pairs: Any) -> list[list[float]]:
    """``[[brightness, contrast], ...]`` (optionally ``[brightness, contrast, blur_sigma]``), positive factors."""
    out = []
    for pair in pairs or []:
        if not isinstance(pair, (list, tuple)) or len(pair) not in (2, 3):
            raise ValueError(f"{model}: {key} entries are [brightness, contrast] or [brightness, contrast, blur_sigma], got {pair!r}")
        values = [float(v) for v in pair]
        if values[0] <= 0 or values[1] < 0 or (len(values) == 3 and values[2] < 0):
            raise ValueError(f"{model}: {key} factors must be positive, got {pair!r}")
        out.append(values)
    return out


def flip_images(images: np.ndarray, flip: str) -> np.ndarray:
    """uint8 [N, H, W, C] flipped (a contiguous copy; the input itself for "none")."""
    axes = FLIPS[flip]
    return np.ascontiguousarray(np.flip(images, axis=axes)) if axes else images


def flip_maps(maps: Any, flip: str) -> Any:
    """[N, H, W] maps (numpy or torch) flipped the same way (flips are their own inverse)."""
    axes = tuple(a for a in FLIPS[flip])  # axes 1 (H) and 2 (W) are the same for [N, H, W]
    if not axes:
        return maps
    if hasattr(maps, "flip"):
        return maps.flip(dims=axes)
    return np.flip(maps, axis=axes)


def photometric_copy(images: np.ndarray, brightness: float, contrast: float, blur_sigma: float = 0.0) -> np.ndarray:
    """uint8 images blurred (Gaussian, ``blur_sigma`` px), contrast scaled around each image's mean,
    then brightness scaled."""
    out = images
    if blur_sigma > 0:
        out, _ = apply_nuisance({"kind": "blur", "sigma": blur_sigma}, out)
    if contrast != 1.0:
        out, _ = apply_nuisance({"kind": "contrast", "factor": contrast}, out)
    if brightness != 1.0:
        out, _ = apply_nuisance({"kind": "brightness", "factor": brightness}, out)
    return out


def training_copies(images: np.ndarray, flips: Sequence[str], photometric: Sequence[Sequence[float]]) -> Iterator[np.ndarray]:
    """The copies of a batch of training boards to fit on: one per flip (``"none"`` = the boards as
    they are), then one per photometric pair (of the unflipped boards)."""
    for flip in flips or ["none"]:
        yield flip_images(images, flip)
    for values in photometric:
        yield photometric_copy(images, *(float(v) for v in values))


def n_training_copies(flips: Sequence[str], photometric: Sequence[Sequence[float]]) -> int:
    return len(flips or ["none"]) + len(photometric)


class FlipMemo:
    """Raw maps of flipped network inputs already computed, keyed by the input's bytes (content-addressed).

    A model that averages its maps over the four flips (test-time augmentation) meets the same flipped images
    again when a whole test set is scored a second time turned left-right, upside down or by 180 degrees (the
    nuisance evaluation): ``hflip(board)`` flipped by ``h`` is the board itself. Looking the result up instead of
    recomputing it gives the same numbers (same input bytes, same deterministic forward pass) at none of the
    cost. Bounded (``max_bytes`` of stored tensors, oldest dropped first); ``hits`` / ``misses`` count look-ups.
    Meant for one scoring session (the model's ``memoise_repeated_inputs()`` context), not for serving.
    """

    def __init__(self, max_bytes: int = 256 * 2**20) -> None:
        self.max_bytes = int(max_bytes)
        self.hits = 0
        self.misses = 0
        self._store: OrderedDict[Hashable, tuple[Any, ...]] = OrderedDict()
        self._bytes = 0

    @staticmethod
    def key(images: np.ndarray) -> bytes:
        """SHA-256 of the images' shape, dtype and bytes (in hardware on current CPUs: ~0.7 ms for four 256 px
        boards, a small fraction of scoring them). Callers may combine it with more context in a tuple."""
        images = np.ascontiguousarray(images)
        digest = hashlib.sha256(repr((images.shape, images.dtype.str)).encode())
        digest.update(images.data)
        return digest.digest()

    def get(self, key: Hashable) -> tuple[Any, ...] | None:
        value = self._store.get(key)
        if value is None:
            self.misses += 1
        else:
            self.hits += 1
        return value

    def put(self, key: Hashable, value: tuple[Any, ...]) -> None:
        size = sum(int(v.nbytes) for v in value)
        if size > self.max_bytes or key in self._store:
            return
        self._store[key] = value
        self._bytes += size
        while self._bytes > self.max_bytes:
            _, old = self._store.popitem(last=False)
            self._bytes -= sum(int(v.nbytes) for v in old)
