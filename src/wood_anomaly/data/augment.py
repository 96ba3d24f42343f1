"""Seeded image augmentation for the gradient-trained models (AutoEncoder, VAE, GANomaly, EfficientAD).

Per image: horizontal / vertical flip (each with its probability), a small rotation and shift in
one affine warp (Pillow) with reflect padding (no black borders), then brightness and contrast jitter.
Everything is drawn from the ``numpy.random.Generator`` passed in, so the same seed gives the
same batch.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation strengths. ``hflip``/``vflip`` are probabilities; ``rotation_deg`` the largest
    rotation either way; ``shift_frac`` the largest shift as a fraction of the image side;
    ``brightness``/``contrast`` the largest relative change (0.1 = +-10 %)."""

    hflip: float = 0.5
    vflip: float = 0.5
    rotation_deg: float = 5.0
    shift_frac: float = 0.05
    brightness: float = 0.1
    contrast: float = 0.1
    enabled: bool = True

    def __post_init__(self) -> None:
        for name in ("hflip", "vflip"):
            p = getattr(self, name)
            if not 0.0 <= float(p) <= 1.0:
                raise ValueError(f"augmentation {name} is a probability in [0, 1], got {p!r}")
        for name in ("rotation_deg", "shift_frac", "brightness", "contrast"):
            if float(getattr(self, name)) < 0.0:
                raise ValueError(f"augmentation {name} must be >= 0, got {getattr(self, name)!r}")
        if self.shift_frac >= 0.5:
            raise ValueError(f"augmentation shift_frac must be < 0.5, got {self.shift_frac!r}")
        if self.brightness >= 1.0 or self.contrast >= 1.0:
            raise ValueError("augmentation brightness and contrast must be < 1 (relative change)")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> AugmentConfig:
        """Build from a params dict (e.g. ``params:augmentation``); unknown keys are an error."""
        if d is None:
            return cls()
        if isinstance(d, AugmentConfig):
            return d
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown augmentation key(s) {unknown}; allowed: {sorted(known)}")
        return cls(**dict(d))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _affine_params(rng: np.random.Generator, config: AugmentConfig, h: int, w: int) -> tuple[float, float, float]:
    angle = float(rng.uniform(-config.rotation_deg, config.rotation_deg)) if config.rotation_deg > 0 else 0.0
    if config.shift_frac > 0:
        dy = float(rng.uniform(-config.shift_frac, config.shift_frac)) * h
        dx = float(rng.uniform(-config.shift_frac, config.shift_frac)) * w
    else:
        dy = dx = 0.0
    return angle, dy, dx


def _warp(image: np.ndarray, angle_deg: float, dy: float, dx: float) -> np.ndarray:
    """Rotate about the centre and shift (bilinear) with reflect padding. image uint8 [H,W,C].

    The image is reflect-padded by the largest distance a rotated/shifted output pixel can
    reach outside it, then warped by Pillow's affine transform (C speed) and cropped back.
    """
    h, w, ch = image.shape
    a = math.radians(angle_deg)
    cos, sin = math.cos(a), math.sin(a)
    m = int(math.ceil(abs(dx) + abs(dy) + (h + w) / 2.0 * abs(sin) + (1 - cos) * max(h, w))) + 2
    padded = np.pad(image, ((m, m), (m, m), (0, 0)), mode="reflect")
    cx, cy = w / 2.0 + m, h / 2.0 + m
    # output (x, y) samples the padded input at R @ (x - w/2 - dx, y - h/2 - dy) + (cx, cy)
    ox, oy = w / 2.0 + dx, h / 2.0 + dy
    coeffs = (cos, -sin, cx - cos * ox + sin * oy, sin, cos, cy - sin * ox - cos * oy)
    # Pillow warps RGB in one call; other channel counts go plane by plane ('L')
    planes = [padded] if ch == 3 else [padded[..., c] for c in range(ch)]
    warped = [
        np.asarray(
            Image.fromarray(np.ascontiguousarray(p)).transform(
                (w, h), Image.Transform.AFFINE, coeffs, Image.Resampling.BILINEAR
            )
        )
        for p in planes
    ]
    out = warped[0] if ch == 3 else np.stack(warped, axis=-1)
    return out.reshape(h, w, ch)


def augment_image(image: np.ndarray, config: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """Augment one uint8 [H,W,C] image (see :func:`augment_batch`)."""
    h, w = image.shape[:2]
    # draw every random number up front, in a fixed order
    do_h = bool(rng.random() < config.hflip)
    do_v = bool(rng.random() < config.vflip)
    angle, dy, dx = _affine_params(rng, config, h, w)
    bright = 1.0 + float(rng.uniform(-config.brightness, config.brightness)) if config.brightness > 0 else 1.0
    contrast = 1.0 + float(rng.uniform(-config.contrast, config.contrast)) if config.contrast > 0 else 1.0

    out = image
    if do_h:
        out = out[:, ::-1]
    if do_v:
        out = out[::-1, :]
    if angle != 0.0 or dy != 0.0 or dx != 0.0:
        out = _warp(out, angle, dy, dx)
    if contrast == 1.0 and bright == 1.0:
        return np.ascontiguousarray(out)
    x = out.astype(np.float32)
    if contrast != 1.0:
        mean = x.mean(axis=(0, 1), keepdims=True)
        x = (x - mean) * contrast + mean
    if bright != 1.0:
        x *= bright
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def augment_batch(
    images: np.ndarray, config: AugmentConfig | Mapping[str, Any], rng: np.random.Generator
) -> np.ndarray:
    """Augment a uint8 batch ``[N,H,W,3]`` with per-image random parameters drawn from ``rng``.

    Returns a new uint8 array of the same shape (a copy when ``config.enabled`` is False).
    """
    config = AugmentConfig.from_dict(config) if not isinstance(config, AugmentConfig) else config
    images = np.asarray(images)
    if images.ndim != 4 or images.dtype != np.uint8:
        raise ValueError(f"augment_batch expects uint8 [N,H,W,C] images, got {images.dtype} {images.shape}")
    if not config.enabled:
        return images.copy()
    out = np.empty_like(images)
    for i in range(images.shape[0]):
        out[i] = augment_image(images[i], config, rng)
    return out


def sample_grid(
    images: np.ndarray,
    config: AugmentConfig | Mapping[str, Any],
    seed: int,
    n: int = 8,
    *,
    n_rows: int = 3,
    pad: int = 2,
) -> np.ndarray:
    """A uint8 grid image ``[h, w, 3]``: the first ``n`` originals on the top row and ``n_rows``
    rows of augmented versions below (white separators), for the augmentation pipeline's PNG."""
    config = AugmentConfig.from_dict(config) if not isinstance(config, AugmentConfig) else config
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(f"sample_grid needs a non-empty [N,H,W,C] batch, got shape {images.shape}")
    picked = images[: max(1, int(n))]
    if picked.shape[-1] == 1:
        picked = np.repeat(picked, 3, axis=-1)
    rng = np.random.default_rng(seed)
    rows = [picked] + [augment_batch(picked, config, rng) for _ in range(int(n_rows))]
    k, h, w = picked.shape[:3]
    grid = np.full((len(rows) * (h + pad) + pad, k * (w + pad) + pad, 3), 255, dtype=np.uint8)
    for r, row in enumerate(rows):
        for c in range(k):
            y, x = pad + r * (h + pad), pad + c * (w + pad)
            grid[y : y + h, x : x + w] = row[c]
    return grid
