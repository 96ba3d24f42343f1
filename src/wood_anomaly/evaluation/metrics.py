"""Image- and pixel-level metrics (Kedro-free; numpy in, plain Python floats/ints out).

The decision rule used everywhere in this project:

* **Threshold** (:func:`validation_threshold`): ``mean(val_scores) + k * std(val_scores)``
  computed on *held-out good validation images* (never on test images, never with labels).
* **Prediction** (:func:`predict`): an image is anomalous when ``score > threshold`` (strictly
  greater; a score equal to the threshold is "good").

``image_f1`` / ``precision`` / ``recall`` / ``accuracy`` are the honest numbers at that
threshold. ``f1_max`` is an **oracle**: the best F1 over all thresholds on the test set itself
(what the seed report and anomalib's F1-max show); it is reported for comparison only.

Pixel metrics: ``pixel_auroc`` over all pixels of the images that have a mask (good test images
count with an all-zero mask) and ``aupro``: the area under the per-region-overlap (PRO) curve
up to a false-positive rate of ``fpr_limit`` (0.3), divided by ``fpr_limit`` (MVTec AD paper,
Bergmann et al. 2021; anomalib ``AUPRO``), with 8-connected ground-truth regions.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import ndimage
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_curve,
    precision_score,
    recall_score,
    roc_auc_score,
)

#: default cap on the number of pixels fed to ``roc_auc_score`` (141 images of 256x256 fit).
DEFAULT_MAX_PIXELS = 10_000_000
_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def _scores_1d(values: Any, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64).ravel()
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return array


def _binary_labels(labels: Any, n: int) -> np.ndarray:
    array = np.asarray(labels).ravel()
    if array.shape[0] != n:
        raise ValueError(f"labels has {array.shape[0]} entries but scores has {n}")
    if not np.isin(array, (0, 1)).all():
        raise ValueError("labels must be 0 (good) or 1 (defect)")
    return array.astype(np.int64)


def validation_threshold(val_scores: Any, k: float = 3.0) -> float:
    """THE threshold rule of this project: ``mean + k * std`` of the validation scores.

    ``val_scores`` are the anomaly scores of *held-out good validation images* (good images that
    were not used for training). The rule never sees a test image or a label, so the metrics at
    this threshold are honest estimates. ``std`` is the sample standard deviation (``ddof=1``).
    With a single validation score ``s`` the threshold is ``s`` nudged up by a relative 1e-6
    (``s * (1 + 1e-6)`` for ``s >= 0``), so that image itself is classified good.

    Raises:
        ValueError: when ``val_scores`` is empty or not finite.
    """
    scores = _scores_1d(val_scores, "val_scores")
    if scores.size == 0:
        raise ValueError(
            "validation_threshold needs at least one validation score (held-out good images)"
        )
    if scores.size == 1:
        return float(scores[0] + abs(scores[0]) * 1e-6)
    return float(scores.mean() + k * scores.std(ddof=1))


def threshold_k_for_false_alarm_rate(false_alarm_rate: float) -> float:
    """``k`` such that ``mean + k * std`` flags ``false_alarm_rate`` of good boards under a normal fit.

    The operating point is a product decision stated up front (e.g. 0.05: one good board in twenty
    sent for a second look), never tuned on test labels: 0.05 -> k = 1.645, 0.00135 -> k = 3.
    """
    from scipy.stats import norm

    if not 0.0 < false_alarm_rate < 1.0:
        raise ValueError(f"false_alarm_rate must be in (0, 1), got {false_alarm_rate}")
    return float(norm.ppf(1.0 - false_alarm_rate))


def predict(scores: Any, threshold: float) -> np.ndarray:
    """Predicted labels (1 = anomalous) under the project's rule ``score > threshold``."""
    return (np.asarray(scores, dtype=np.float64) > threshold).astype(np.int64)


def f1_max(labels: Any, scores: Any) -> tuple[float, float]:
    """ORACLE best F1 over all thresholds on (test) labels, and the threshold reaching it.

    Uses ``sklearn.metrics.precision_recall_curve``. The returned threshold is placed halfway
    between the lowest flagged score and the next lower score, so ``predict(scores, t)``
    (``score > t``) reproduces the oracle F1. This number chooses its threshold on the labels
    it is evaluated on: never present it as a deployable result.
    """
    y_score = _scores_1d(scores, "scores")
    y_true = _binary_labels(labels, y_score.size)
    precision, recall, thresholds = precision_recall_curve(y_true, y_score)
    precision, recall = precision[:-1], recall[:-1]  # the last point has no threshold
    denominator = precision + recall
    f1 = np.divide(2 * precision * recall, denominator, out=np.zeros_like(denominator),
                   where=denominator > 0)
    best = int(np.argmax(f1))
    cut = float(thresholds[best])  # sklearn flags score >= cut
    below = y_score[y_score < cut]
    strict = (cut + float(below.max())) / 2 if below.size else float(np.nextafter(cut, -np.inf))
    return float(f1[best]), strict


def image_metrics(labels: Any, scores: Any, threshold: float) -> dict[str, float | int]:
    """Image-level metrics of test ``scores`` against ``labels`` (0 good, 1 defect).

    Keys: ``image_auroc``; at ``threshold`` (rule ``score > threshold``): ``image_f1``,
    ``image_precision``, ``image_recall``, ``image_accuracy``, ``tp``, ``fp``, ``tn``, ``fn``;
    ``f1_max`` and ``f1_max_threshold`` (ORACLE, see :func:`f1_max`); ``n_good``, ``n_defect``.

    Raises:
        ValueError: when labels are not 0/1, lengths differ, or one class is missing.
    """
    y_score = _scores_1d(scores, "scores")
    y_true = _binary_labels(labels, y_score.size)
    n_defect = int(y_true.sum())
    n_good = int(y_true.size - n_defect)
    if n_defect == 0 or n_good == 0:
        raise ValueError(
            f"image metrics need good and defect images; got {n_good} good, {n_defect} defect"
        )
    y_pred = predict(y_score, threshold)
    tn, fp, fn, tp = confusion_matrix(y_true, y_pred, labels=[0, 1]).ravel()
    best_f1, best_threshold = f1_max(y_true, y_score)
    return {
        "image_auroc": float(roc_auc_score(y_true, y_score)),
        "image_f1": float(f1_score(y_true, y_pred, zero_division=0)),
        "image_precision": float(precision_score(y_true, y_pred, zero_division=0)),
        "image_recall": float(recall_score(y_true, y_pred, zero_division=0)),
        "image_accuracy": float(accuracy_score(y_true, y_pred)),
        "tp": int(tp),
        "fp": int(fp),
        "tn": int(tn),
        "fn": int(fn),
        "f1_max": best_f1,
        "f1_max_threshold": best_threshold,
        "n_good": n_good,
        "n_defect": n_defect,
    }


def _subsample(n: int, max_items: int, seed: int = 0) -> np.ndarray | None:
    """Deterministic sorted subset of ``range(n)`` of size ``max_items`` (None: keep all)."""
    if n <= max_items:
        return None
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=max_items, replace=False))


def aupro(masks: np.ndarray, maps: np.ndarray, fpr_limit: float = 0.3) -> float:
    """Normalised area under the PRO curve up to ``fpr_limit`` (exact, all thresholds).

    ``masks`` [N,H,W] (nonzero = defect), ``maps`` [N,H,W]. For every threshold ``t`` the PRO is
    the mean over ground-truth regions (8-connected components, per image) of the fraction of
    the region with ``map >= t``; the FPR is the fraction of defect-free pixels with
    ``map >= t``. All thresholds are evaluated at once: pixels are sorted by score once and
    both quantities are cumulative sums of per-pixel weights (``1 / (|region| * n_regions)``
    and ``1 / n_negative``), keeping the last point of each run of tied scores; only pixels
    scoring above the threshold where the FPR passes ``fpr_limit`` are sorted. The curve is
    integrated with the trapezoid rule, linearly interpolated at ``fpr_limit``, and divided by
    ``fpr_limit`` (1.0 = perfect). Returns NaN when there is no region or no defect-free pixel.
    """
    masks = np.asarray(masks) > 0
    maps = np.asarray(maps)
    if not np.issubdtype(maps.dtype, np.floating):  # ints: negation below must not wrap
        maps = maps.astype(np.float32)
    if masks.shape != maps.shape or masks.ndim != 3:
        raise ValueError(f"masks {masks.shape} and maps {maps.shape} must both be [N,H,W]")
    if not np.all(np.isfinite(maps)):
        raise ValueError("anomaly maps contain NaN or infinite values")
    if not 0 < fpr_limit <= 1:
        raise ValueError(f"fpr_limit must be in (0, 1], got {fpr_limit}")

    region_ids = np.zeros(masks.shape, dtype=np.int32)
    n_regions = 0
    for i in range(masks.shape[0]):
        if masks[i].any():
            labelled, count = ndimage.label(masks[i], structure=_EIGHT_CONNECTED)
            region_ids[i] = np.where(labelled > 0, labelled + n_regions, 0)
            n_regions += count
    negatives = ~masks
    n_negative = int(negatives.sum())
    if n_regions == 0 or n_negative == 0:
        return float("nan")

    flat_ids = region_ids.ravel()
    region_sizes = np.bincount(flat_ids, minlength=n_regions + 1).astype(np.float64)
    pro_weight_of_region = np.zeros(n_regions + 1)
    pro_weight_of_region[1:] = 1.0 / (region_sizes[1:] * n_regions)

    scores = maps.ravel()
    # Only thresholds down to the first one past fpr_limit matter: keep the pixels scoring at
    # least the (floor(fpr_limit * n_negative) + 1)-th highest defect-free score (whole tie
    # runs included), so the sort below handles about fpr_limit of the image area.
    negative_scores = scores[flat_ids == 0]
    rank = min(int(fpr_limit * n_negative) + 1, n_negative)
    cutoff = np.partition(negative_scores, n_negative - rank)[n_negative - rank]
    candidates = np.flatnonzero(scores >= cutoff)
    order = candidates[np.argsort(-scores[candidates])]  # descending; tie order is irrelevant
    sorted_scores = scores[order]
    sorted_ids = flat_ids[order]
    fpr = np.cumsum(sorted_ids == 0, dtype=np.float64) / n_negative
    pro = np.cumsum(pro_weight_of_region[sorted_ids])
    # one curve point per distinct score: the last pixel of each run of ties
    last_of_run = np.append(sorted_scores[1:] != sorted_scores[:-1], True)
    fpr = np.concatenate(([0.0], fpr[last_of_run]))
    pro = np.concatenate(([0.0], np.minimum(pro[last_of_run], 1.0)))

    inside = int(np.searchsorted(fpr, fpr_limit, side="right"))  # fpr[:inside] <= fpr_limit
    x, y = fpr[:inside], pro[:inside]
    if inside < fpr.size and x[-1] < fpr_limit:
        x0, x1, y0, y1 = fpr[inside - 1], fpr[inside], pro[inside - 1], pro[inside]
        y_at_limit = y0 + (y1 - y0) * (fpr_limit - x0) / (x1 - x0)
        x, y = np.append(x, fpr_limit), np.append(y, y_at_limit)
    area = float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2))
    return area / fpr_limit


def pixel_metrics(
    masks: Any,
    maps: Any,
    has_mask: Any,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    fpr_limit: float = 0.3,
) -> dict[str, float]:
    """``pixel_auroc`` and ``aupro`` over the images with ``has_mask`` True.

    ``masks`` [N,H,W] 0/1, ``maps`` [N,H,W] (higher = more anomalous), ``has_mask`` [N] bool.
    ``pixel_auroc`` uses ``sklearn.metrics.roc_auc_score`` on all selected pixels, or on a
    deterministic random subset (seed 0) of ``max_pixels`` of them when there are more.
    ``aupro`` (:func:`aupro`) always uses every pixel. Returns ``{}`` when no image has a mask
    or the selected pixels are all defect-free (or all defective): the metrics are undefined.
    """
    masks = np.asarray(masks)
    maps = np.asarray(maps)
    selected = np.asarray(has_mask, dtype=bool).ravel()
    if masks.shape != maps.shape or masks.ndim != 3:
        raise ValueError(f"masks {masks.shape} and maps {maps.shape} must both be [N,H,W]")
    if selected.shape[0] != masks.shape[0]:
        raise ValueError(f"has_mask has {selected.shape[0]} entries for {masks.shape[0]} images")
    if not selected.any():
        return {}
    truth = masks[selected] > 0
    values = maps[selected].astype(np.float32, copy=False)
    if not np.all(np.isfinite(values)):
        raise ValueError("anomaly maps contain NaN or infinite values")
    n_positive = int(truth.sum())
    if n_positive == 0 or n_positive == truth.size:
        return {}

    flat_truth, flat_values = truth.ravel(), values.ravel()
    keep = _subsample(flat_truth.size, max_pixels)
    if keep is not None:
        flat_truth, flat_values = flat_truth[keep], flat_values[keep]
    result = {"pixel_auroc": float(roc_auc_score(flat_truth, flat_values))}
    pro_area = aupro(truth, values, fpr_limit=fpr_limit)
    if math.isfinite(pro_area):
        result["aupro"] = pro_area
    return result


def off_defect_auroc(
    labels: Any, maps: Any, masks: Any, has_mask: Any = None, *, dilate: int = 16, percentile: float = 99.0
) -> dict[str, float]:
    """How well the anomaly maps tell defective boards from good ones *away from the labelled defects*.

    Each board's statistic is the ``percentile`` of its map over the pixels outside its defect mask dilated by
    ``dilate`` px (good boards: the whole map); ``off_defect_auroc`` is the image AUROC of that statistic
    (defective boards with a mask vs good boards), ``map_auroc`` the same statistic over the whole map. A model
    that reacts only to the labelled defects gives ``off_defect_auroc`` near 0.5; more means the defective boards
    differ from the good ones elsewhere too (unlabelled marks, other wood, another capture), so part of the test
    AUROC does not measure finding the defect. Returns ``{}`` without good boards or defective boards with a mask.
    """
    labels = np.asarray(labels).astype(int).ravel()
    maps = np.asarray(maps, dtype=np.float32)
    masks = np.asarray(masks) > 0
    has_mask = np.ones(labels.size, dtype=bool) if has_mask is None else np.asarray(has_mask, dtype=bool).ravel()
    if maps.shape != masks.shape or maps.ndim != 3 or maps.shape[0] != labels.size:
        raise ValueError(f"labels {labels.shape}, maps {maps.shape} and masks {masks.shape} must describe the same [N,H,W] boards")
    rows = np.flatnonzero((labels == 0) | ((labels == 1) & has_mask & masks.any(axis=(1, 2))))
    if not (labels[rows] == 0).any() or not (labels[rows] == 1).any():
        return {}
    structure = ndimage.generate_binary_structure(2, 1)
    whole, off = [], []
    for i in rows:
        away = ~ndimage.binary_dilation(masks[i], structure=structure, iterations=dilate) if dilate > 0 else ~masks[i]
        values = maps[i][away] if away.any() else maps[i].ravel()
        whole.append(float(np.percentile(maps[i], percentile)))
        off.append(float(np.percentile(values, percentile)))
    return {
        "off_defect_auroc": float(roc_auc_score(labels[rows], off)),
        "map_auroc": float(roc_auc_score(labels[rows], whole)),
    }


def evaluate(
    labels: Any,
    scores: Any,
    val_scores: Any,
    masks: Any = None,
    maps: Any = None,
    has_mask: Any = None,
    threshold_k: float = 3.0,
    threshold: float | None = None,
    **pixel_kwargs: Any,
) -> dict[str, float | int]:
    """All metrics of one model: the validation threshold, image metrics, pixel metrics.

    ``labels`` / ``scores``: test images. ``val_scores``: held-out good validation images, used
    only for the threshold (:func:`validation_threshold` with ``k = threshold_k``). Pixel
    metrics are added when ``masks`` and ``maps`` are given (``has_mask`` defaults to all
    True); ``threshold`` (e.g. :func:`.thresholds.conformal_threshold`) replaces the
    ``mean + k * std`` rule when given; ``pixel_kwargs`` go to :func:`pixel_metrics` (``max_pixels``, ``fpr_limit``).
    """
    if threshold is None:  # legacy rule; the pipelines pass the conformal threshold (see .thresholds)
        threshold = validation_threshold(val_scores, k=threshold_k)
    result: dict[str, float | int] = {
        "threshold": threshold,
        "threshold_k": float(threshold_k),
        "n_val": int(np.asarray(val_scores).size),
    }
    result.update(image_metrics(labels, scores, threshold))
    if masks is not None and maps is not None:
        if has_mask is None:
            has_mask = np.ones(np.asarray(masks).shape[0], dtype=bool)
        result.update(pixel_metrics(masks, maps, has_mask, **pixel_kwargs))
    return result
