"""95 % intervals on test metrics: stratified bootstrap over test images (Kedro-free, numpy/scipy/sklearn).

Every interval here comes from the same resampling scheme: ``n_resamples`` (>= 1000) bootstrap
resamples of the test images drawn with ``numpy.random.default_rng(seed)``, **stratified** by label
(good boards resampled among good boards, defective among defective, so every resample keeps the
test set's 70 / 71 mix and AUROC is always defined), and the percentile interval (2.5 %, 97.5 %) of
the metric over the resamples. ``scipy.stats.bootstrap`` resamples one pooled sample (or pairs)
without strata, hence the small helper :func:`stratified_counts`; a resample is represented by how
many times each image is drawn (a ``[B, N]`` count matrix), which makes every metric a weighted sum
and all resamples cheap to evaluate at once:

* image AUROC: the Mann-Whitney form ``sum_ij c_i c_j [s_i > s_j] (+1/2 ties) / (P Q)``;
* F1 at the (fixed) threshold, detection rate (TPR) at 1 / 5 / 10 % false alarms (the threshold
  re-read on each resample's good boards);
* pixel AUROC and AUPRO, **resampled by image** (the pixels of an image travel together): each
  image's pixels are summarised once (histograms of defect / defect-free pixel scores over 1024
  shared quantile bins; per-image counts of defect-free pixels and per-region overlaps above 256
  thresholds spanning FPR 0 .. 1.25 x ``fpr_limit``), so a resample is a weighted sum of those
  summaries. This binning changes the full-sample pixel AUROC / AUPRO by ~1e-3 at most (checked in
  the tests); the headline values themselves stay the exact ones of :mod:`.metrics`.

Same seed + same scores = same intervals. Paired comparisons (:func:`paired_auroc_differences`)
use the same resamples for every model, since all models are scored on the same test boards.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import ndimage

DEFAULT_RESAMPLES = 2000
DEFAULT_RATES = (0.01, 0.05, 0.10)
_EIGHT = np.ones((3, 3), dtype=bool)


def stratified_counts(labels: Any, n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> np.ndarray:
    """``[n_resamples, N]`` draw counts of a stratified bootstrap (each label class resampled within itself)."""
    y = np.asarray(labels).astype(np.int64).ravel()
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    rng = np.random.default_rng(seed)
    counts = np.zeros((n_resamples, y.size), dtype=np.float64)
    for value in np.unique(y):
        members = np.flatnonzero(y == value)
        draws = rng.integers(0, members.size, size=(n_resamples, members.size))
        for b in range(n_resamples):
            counts[b, members] = np.bincount(draws[b], minlength=members.size)
    return counts


def percentile_interval(values: Any, level: float = 0.95) -> list[float]:
    """``[low, high]`` percentile interval of bootstrap values (NaN resamples ignored; NaNs when none)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return [float("nan"), float("nan")]
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(v, [tail, 100 - tail])
    return [float(low), float(high)]


def _split(labels: Any, scores: Any) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels).astype(np.int64).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"{y.size} labels for {s.size} scores")
    return y, s


def auroc_resamples(labels: Any, scores: Any, counts: np.ndarray) -> np.ndarray:
    """Image AUROC of every resample (``counts`` from :func:`stratified_counts` on the same labels)."""
    y, s = _split(labels, scores)
    pos, neg = s[y == 1], s[y == 0]
    if pos.size == 0 or neg.size == 0:
        return np.full(counts.shape[0], np.nan)
    kernel = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    cp, cn = counts[:, y == 1], counts[:, y == 0]
    return np.einsum("bi,ij,bj->b", cp, kernel, cn) / (cp.sum(1) * cn.sum(1))


def f1_resamples(labels: Any, scores: Any, threshold: float, counts: np.ndarray) -> np.ndarray:
    """F1 at a fixed threshold (``score > threshold`` = defect) of every resample."""
    y, s = _split(labels, scores)
    flagged = (s > threshold).astype(np.float64)
    tp = counts @ (flagged * (y == 1))
    fp = counts @ (flagged * (y == 0))
    fn = counts @ ((1 - flagged) * (y == 1))
    denominator = 2 * tp + fp + fn
    return np.divide(2 * tp, denominator, out=np.zeros_like(tp), where=denominator > 0)


def tpr_at_false_alarm(labels: Any, scores: Any, rate: float, counts: np.ndarray | None = None) -> np.ndarray | float:
    """Detection rate (TPR) at the threshold that flags at most ``rate`` of the good boards.

    Threshold = the ``(floor(rate * Q) + 1)``-th highest good score (with bootstrap multiplicities), so
    ``floor(rate * Q)`` good boards score above it; TPR = share of defects strictly above. Without
    ``counts``: the full-sample value (float).
    """
    y, s = _split(labels, scores)
    single = counts is None
    if single:
        counts = np.ones((1, y.size))
    neg_order = np.argsort(-s[y == 0], kind="stable")
    neg_sorted = s[y == 0][neg_order]
    cn = counts[:, y == 0][:, neg_order]
    q = cn.sum(1)
    allowed = np.floor(rate * q + 1e-9)
    cumulative = np.cumsum(cn, axis=1)
    index = np.argmax(cumulative > allowed[:, None], axis=1)  # first sorted good past the allowance
    thresholds = neg_sorted[index]
    pos = s[y == 1]
    cp = counts[:, y == 1]
    tpr = (cp * (pos[None, :] > thresholds[:, None])).sum(1) / cp.sum(1)
    return float(tpr[0]) if single else tpr


class PixelSummary:
    """Per-image summaries of anomaly maps for pixel AUROC / AUPRO of image-level bootstrap resamples."""

    def __init__(self, masks: np.ndarray, maps: np.ndarray, fpr_limit: float = 0.3,
                 n_bins: int = 1024, n_thresholds: int = 256, seed: int = 0) -> None:
        masks = np.asarray(masks) > 0
        maps = np.asarray(maps, dtype=np.float32)
        if masks.shape != maps.shape or masks.ndim != 3:
            raise ValueError(f"masks {masks.shape} and maps {maps.shape} must both be [N,H,W]")
        n = masks.shape[0]
        self.fpr_limit = float(fpr_limit)
        flat = maps.reshape(n, -1)
        truth = masks.reshape(n, -1)
        rng = np.random.default_rng(seed)
        sample = flat.ravel()[rng.integers(0, flat.size, size=min(flat.size, 200_000))]
        edges = np.unique(np.quantile(sample, np.linspace(0, 1, n_bins + 1)[1:-1]))
        bins = np.searchsorted(edges, flat, side="right")  # [N, P] bin index 0..len(edges)
        n_b = edges.size + 1
        offsets = (np.arange(n)[:, None] * n_b + bins)
        self.pos_hist = np.bincount(offsets[truth], minlength=n * n_b).reshape(n, n_b).astype(np.float64)
        self.neg_hist = np.bincount(offsets[~truth], minlength=n * n_b).reshape(n, n_b).astype(np.float64)
        # AUPRO: thresholds at defect-free-pixel quantiles spanning FPR 0 .. 1.25 * fpr_limit (descending)
        negatives = flat[~truth]
        levels = np.linspace(0.0, min(1.0, 1.25 * self.fpr_limit), n_thresholds)
        self.thresholds = np.quantile(negatives, 1.0 - levels) if negatives.size else np.zeros(0)
        self.neg_total = (~truth).sum(1).astype(np.float64)
        self.neg_above = np.zeros((n, self.thresholds.size))
        self.region_overlap = np.zeros((n, self.thresholds.size))
        self.n_regions = np.zeros(n)
        for i in range(n):
            neg_i = np.sort(flat[i][~truth[i]])
            self.neg_above[i] = neg_i.size - np.searchsorted(neg_i, self.thresholds, side="left")
            if truth[i].any():
                labelled, count = ndimage.label(masks[i], structure=_EIGHT)
                self.n_regions[i] = count
                values = maps[i].ravel()
                ids = labelled.ravel()
                for r in range(1, count + 1):
                    region = np.sort(values[ids == r])
                    self.region_overlap[i] += (region.size - np.searchsorted(region, self.thresholds, side="left")) / region.size

    def pixel_auroc(self, counts: np.ndarray) -> np.ndarray:
        """Binned pixel AUROC of each resample (``counts`` [B, N] over these images)."""
        pos = counts @ self.pos_hist
        neg = counts @ self.neg_hist
        below = np.cumsum(neg, axis=1) - neg
        total = pos.sum(1) * neg.sum(1)
        auc = (pos * (below + 0.5 * neg)).sum(1)
        return np.divide(auc, total, out=np.full(auc.shape, np.nan), where=total > 0)

    def aupro(self, counts: np.ndarray) -> np.ndarray:
        """AUPRO (to ``fpr_limit``, normalised) of each resample, on the threshold grid."""
        if self.thresholds.size == 0:
            return np.full(counts.shape[0], np.nan)
        fpr = (counts @ self.neg_above) / (counts @ self.neg_total)[:, None]
        n_reg = counts @ self.n_regions
        pro = np.divide(counts @ self.region_overlap, n_reg[:, None], out=np.full(fpr.shape, np.nan),
                        where=n_reg[:, None] > 0)
        out = np.empty(counts.shape[0])
        for b in range(counts.shape[0]):
            x = np.concatenate(([0.0], fpr[b]))
            y = np.concatenate(([0.0], pro[b]))
            inside = x <= self.fpr_limit
            xs, ys = x[inside], y[inside]
            end = np.interp(self.fpr_limit, x, y)
            xs, ys = np.append(xs, self.fpr_limit), np.append(ys, end)
            out[b] = np.trapezoid(ys, xs) / self.fpr_limit
        return out


def bootstrap_intervals(
    labels: Any,
    scores: Any,
    threshold: float,
    *,
    masks: np.ndarray | None = None,
    maps: np.ndarray | None = None,
    has_mask: Any = None,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    fpr_limit: float = 0.3,
    rates: Sequence[float] = DEFAULT_RATES,
) -> dict[str, Any]:
    """95 % intervals of one model's test metrics: ``{"image_auroc_ci95": [lo, hi], ...}``.

    Keys: ``image_auroc_ci95``, ``image_f1_ci95`` (at ``threshold``), ``pixel_auroc_ci95`` and
    ``aupro_ci95`` (when masks and maps are given), ``tpr_at_far``: ``{"0.01": {"tpr": v,
    "ci95": [lo, hi]}, ...}`` and ``bootstrap``: the scheme used.
    """
    y, s = _split(labels, scores)
    counts = stratified_counts(y, n_resamples, seed)
    out: dict[str, Any] = {
        "image_auroc_ci95": percentile_interval(auroc_resamples(y, s, counts)),
        "image_f1_ci95": percentile_interval(f1_resamples(y, s, threshold, counts)),
    }
    tpr: dict[str, Any] = {}
    for rate in rates:
        tpr[f"{rate:g}"] = {
            "tpr": tpr_at_false_alarm(y, s, rate),
            "ci95": percentile_interval(tpr_at_false_alarm(y, s, rate, counts)),
        }
    out["tpr_at_far"] = tpr
    if masks is not None and maps is not None:
        selected = np.ones(y.size, dtype=bool) if has_mask is None else np.asarray(has_mask, dtype=bool)
        if selected.any():
            summary = PixelSummary(np.asarray(masks)[selected], np.asarray(maps)[selected], fpr_limit=fpr_limit, seed=seed)
            sub = counts[:, selected]
            out["pixel_auroc_ci95"] = percentile_interval(summary.pixel_auroc(sub))
            out["aupro_ci95"] = percentile_interval(summary.aupro(sub))
    out["bootstrap"] = {
        "method": "stratified (by label) bootstrap over test images, percentile 95% interval; pixel metrics resampled by image",
        "n_resamples": int(n_resamples),
        "seed": int(seed),
    }
    return out


def paired_auroc_differences(
    labels: Any, scores_by_model: Mapping[str, Any], *, n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0
) -> list[dict[str, Any]]:
    """Every pair of models (a, b): AUROC(a) - AUROC(b) on the same test boards with a paired 95 % interval.

    The same stratified resamples are applied to every model; ``significant`` = the interval excludes 0.
    Rows are ordered by the models' order in ``scores_by_model``.
    """
    y = np.asarray(labels).astype(np.int64).ravel()
    counts = stratified_counts(y, n_resamples, seed)
    names = list(scores_by_model)
    point = {m: float(auroc_resamples(y, scores_by_model[m], np.ones((1, y.size)))[0]) for m in names}
    boot = {m: auroc_resamples(y, scores_by_model[m], counts) for m in names}
    rows = []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            low, high = percentile_interval(boot[a] - boot[b])
            rows.append({
                "model_a": a, "model_b": b, "auroc_a": point[a], "auroc_b": point[b],
                "difference": point[a] - point[b], "ci95_low": low, "ci95_high": high,
                "significant": bool(low > 0 or high < 0),
            })
    return rows


def validation_auroc(good_scores: Any, defect_scores: Any, *, n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> dict[str, Any]:
    """Label-free validation evidence: AUROC of held-out good boards vs the same boards with pasted
    synthetic defects, with its stratified-bootstrap 95 % interval (empty dict without both kinds)."""
    good = np.asarray(good_scores, dtype=np.float64).ravel()
    defect = np.asarray(defect_scores, dtype=np.float64).ravel()
    if good.size == 0 or defect.size == 0:
        return {}
    labels = np.r_[np.zeros(good.size, int), np.ones(defect.size, int)]
    scores = np.r_[good, defect]
    counts = stratified_counts(labels, n_resamples, seed)
    return {
        "image_auroc": float(auroc_resamples(labels, scores, np.ones((1, labels.size)))[0]),
        "image_auroc_ci95": percentile_interval(auroc_resamples(labels, scores, counts)),
        "n_good": int(good.size),
        "n_defect": int(defect.size),
    }
