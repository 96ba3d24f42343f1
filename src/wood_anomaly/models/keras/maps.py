"""Reconstruction error maps (MSE, SSIM, gradient), smoothing, image-score aggregation, colouring."""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from scipy.ndimage import gaussian_filter

MAP_KINDS = ("mse", "ssim", "grad")
AGGREGATIONS = ("max", "topk")


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
