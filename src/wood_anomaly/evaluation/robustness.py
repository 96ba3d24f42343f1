"""Nuisance robustness: score the test images again under label-preserving transforms
(:mod:`wood_anomaly.data.nuisances`) and measure what changes.

Kedro-free. :func:`score_under_nuisances` runs a fitted model (anything with
``score(images, batch_size=) -> (scores, maps)``) on every nuisance version of the test images and
keeps only what the metrics need, so the saved ``scores.npz`` stays small:

- ``nuisance_scores`` ``[M, N]``: image scores under each of the M nuisances;
- ``nuisance_pixel_values`` ``[M, K]`` (float16): anomaly-map values at ``K`` fixed pixels of the
  test images that have masks (``nuisance_pixel_index``, a seeded subset of at most ``max_pixels``
  pixels). Maps of geometric nuisances are mapped back first (``invert_geometry``), so the same pixels of the original
  masks are the ground truth (the same as moving the masks with the images);
- ``plain_pixel_values`` ``[K]``: the plain maps at those pixels, so "plain" is measured the same way.

:func:`robustness_metrics` turns these into ``{name: {image_auroc, pixel_auroc, false_alarm_rate}}``
with ``false_alarm_rate`` = share of GOOD test boards scoring above the model's own (validation)
threshold; ``plain`` comes first, measured the same way.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

from wood_anomaly.data.nuisances import apply_nuisance, invert_geometry, parse_nuisances

logger = logging.getLogger(__name__)

#: pixels kept per nuisance for the pixel AUROC (2**18 = 0.5 MB per nuisance in float16)
DEFAULT_ROBUSTNESS_PIXELS = 262_144
METRIC_NAMES = ("image_auroc", "pixel_auroc", "false_alarm_rate")


def pixel_index(shape: tuple[int, int, int], has_mask: np.ndarray, max_pixels: int, seed: int = 0) -> np.ndarray:
    """Sorted flat indices into ``[N, H, W]`` of at most ``max_pixels`` pixels of the images with a mask
    (all of their pixels when fewer); deterministic for a given seed."""
    n, h, w = shape
    rows = np.flatnonzero(np.asarray(has_mask, dtype=bool))
    per_image = h * w
    total = rows.size * per_image
    if total == 0:
        return np.zeros(0, np.int64)
    if total <= max_pixels:
        local = np.arange(total, dtype=np.int64)
    else:
        local = np.sort(np.random.default_rng(seed).choice(total, size=int(max_pixels), replace=False)).astype(np.int64)
    return rows[local // per_image] * per_image + local % per_image


def score_under_nuisances(
    model: Any,
    images: np.ndarray,
    nuisances: Mapping[str, Any] | None,
    *,
    has_mask: np.ndarray | None = None,
    plain_maps: np.ndarray | None = None,
    batch_size: int = 16,
    max_pixels: int = DEFAULT_ROBUSTNESS_PIXELS,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Score ``images`` (uint8 ``[N,H,W,3]``) under every configured nuisance.

    ``nuisances``: ``evaluation.nuisances`` (``{name: {kind, ...}}``; ``{}`` = none -> empty arrays).
    ``has_mask`` ``[N]`` picks the images whose pixels are sampled for the pixel AUROC; ``plain_maps``
    (the model's maps of the untransformed images) are sampled at the same pixels. Returns the arrays
    described in the module docstring plus ``nuisance_names`` and ``nuisance_seconds`` (total time).
    """
    specs = parse_nuisances(nuisances if nuisances is not None else {})
    images = np.asarray(images)
    n, h, w = images.shape[:3]
    has_mask = np.zeros(n, bool) if has_mask is None else np.asarray(has_mask, dtype=bool)
    index = pixel_index((n, h, w), has_mask, int(max_pixels), seed=seed)
    out_scores = np.zeros((len(specs), n), np.float32)
    out_pixels = np.zeros((len(specs), index.size), np.float16)
    start = time.perf_counter()
    for m, spec in enumerate(specs.values()):
        t0 = time.perf_counter()
        transformed, _ = apply_nuisance(spec, images)
        scores, maps = model.score(transformed, batch_size=batch_size)
        maps = np.asarray(maps)
        if maps.shape != (n, h, w):
            raise ValueError(f"nuisance {spec.name!r}: the model returned maps {maps.shape}, expected {(n, h, w)}")
        out_scores[m] = np.asarray(scores, dtype=np.float32)
        out_pixels[m] = invert_geometry(spec, maps).reshape(-1)[index].astype(np.float16)
        logger.info("Scored %d test images under nuisance %-16s in %.1f s", n, spec.name, time.perf_counter() - t0)
    plain = (
        np.asarray(plain_maps).reshape(-1)[index].astype(np.float16)
        if plain_maps is not None
        else np.zeros(0, np.float16)
    )
    return {
        "nuisance_names": np.array(list(specs), dtype=str),
        "nuisance_scores": out_scores,
        "nuisance_pixel_index": index,
        "nuisance_pixel_values": out_pixels,
        "plain_pixel_values": plain,
        "nuisance_seconds": np.float32(time.perf_counter() - start),
    }


def _entry(
    labels: np.ndarray, scores: np.ndarray, threshold: float, truth: np.ndarray | None, values: np.ndarray | None
) -> dict[str, float]:
    good = labels == 0
    entry = {
        "image_auroc": float(roc_auc_score(labels, scores)) if 0 < labels.sum() < labels.size else float("nan"),
        "pixel_auroc": float("nan"),
        "false_alarm_rate": float((scores[good] > threshold).mean()) if good.any() else float("nan"),
    }
    if truth is not None and values is not None and values.size and 0 < truth.sum() < truth.size:
        entry["pixel_auroc"] = float(roc_auc_score(truth, values.astype(np.float32)))
    return entry


def robustness_metrics(
    scores: Mapping[str, np.ndarray], labels: np.ndarray, threshold: float, masks: np.ndarray | None = None
) -> dict[str, dict[str, float]]:
    """``{"plain": {...}, <nuisance>: {image_auroc, pixel_auroc, false_alarm_rate}}`` from a scores dict
    holding the arrays of :func:`score_under_nuisances` (``{}`` when it holds none).

    ``labels`` ``[N]`` 0 good / 1 defect, ``threshold`` the model's own (score > threshold = flagged),
    ``masks`` ``[N, H, W]`` the untransformed test masks (pixel AUROC NaN without them).
    """
    if "nuisance_names" not in scores:
        return {}
    names = [str(x) for x in np.asarray(scores["nuisance_names"]).reshape(-1)]
    labels = np.asarray(labels).astype(int)
    index = np.asarray(scores.get("nuisance_pixel_index", np.zeros(0, np.int64)))
    truth = (np.asarray(masks).reshape(-1)[index] > 0) if masks is not None and index.size else None
    result = {
        "plain": _entry(labels, np.asarray(scores["scores"], np.float64), threshold, truth,
                        np.asarray(scores.get("plain_pixel_values", np.zeros(0)))),
    }
    for m, name in enumerate(names):
        result[name] = _entry(
            labels,
            np.asarray(scores["nuisance_scores"][m], np.float64),
            threshold,
            truth,
            np.asarray(scores["nuisance_pixel_values"][m]) if index.size else None,
        )
    return result


def flatten_robustness(robustness: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """``{"hflip": {"image_auroc": 0.9}}`` -> ``{"robustness.hflip.image_auroc": 0.9}`` (for MLflow)."""
    return {f"robustness.{name}.{metric}": float(v) for name, entry in robustness.items() for metric, v in entry.items()}
