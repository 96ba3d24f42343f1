"""The threshold rule: a conformal (order-statistic) quantile of good-board scores the model never trained on.

Kedro-free. The rule, for a promised false-alarm rate ``alpha`` and ``n`` held-out good-board scores
``s_(1) <= ... <= s_(n)`` (scores of good boards that the scored model did not train on):

    k = ceil((n + 1) * (1 - alpha)),   threshold = s_(k),   a board is flagged when score > threshold.

Why this one (split-conformal prediction, Vovk et al. 2005; Angelopoulos & Bates 2021): if a new good
board's score is exchangeable with the held-out ones (same model, boards from the same line), its rank
among the ``n + 1`` scores is uniform, so

    P(new good board flagged) = (n + 1 - k) / (n + 1) <= alpha         (the *expected* false-alarm rate),

for every score distribution (no normal fit). For one fixed set of held-out scores the false-alarm
rate of the threshold is itself random: ``1 - F(s_(k)) ~ Beta(n + 1 - k, k)``; its 2.5 % / 97.5 %
quantiles are the 95 % interval reported beside the promise (``scipy.stats.beta``). More held-out
scores narrow it: with 7 scores the rule cannot promise 5 % at all (k > n), with 70 the interval is
about [1 %, 10 %].

Where the held-out scores come from (:func:`out_of_fold_scores`): k-fold over the good training
boards, each fold scored by a model fitted on the other folds, the deployed model fitted on all of
them. The fold logic only uses the :class:`~wood_anomaly.models.base.AnomalyModel` contract
(``fit`` / ``score``), so it works for any model. The realised rate on test boards is measured with
:func:`realised_false_alarm_rate` (Clopper-Pearson interval, ``scipy.stats.binomtest``).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConformalThreshold:
    """A threshold and what it promises (see the module docstring)."""

    threshold: float
    false_alarm_rate: float  # the promised alpha
    n_scores: int  # n held-out good-board scores
    rank: int  # k: threshold = k-th smallest score
    expected_false_alarm_rate: float  # (n + 1 - k) / (n + 1)
    expected_false_alarm_rate_ci95: tuple[float, float]  # Beta(n + 1 - k, k) 2.5 / 97.5 % quantiles
    promise_kept: bool  # False when n is too small for alpha (k > n: the maximum is used)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["expected_false_alarm_rate_ci95"] = list(self.expected_false_alarm_rate_ci95)
        return out


def _finite_1d(values: Any, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64).ravel()
    if array.size == 0:
        raise ValueError(f"{name}: no scores")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return array


def min_scores_for(false_alarm_rate: float) -> int:
    """Smallest ``n`` for which the rule can keep ``false_alarm_rate`` (``k <= n``): ceil(1/alpha) - 1."""
    return int(math.ceil(1.0 / false_alarm_rate - 1e-12)) - 1


def conformal_threshold(scores: Any, false_alarm_rate: float) -> ConformalThreshold:
    """Threshold = the ``ceil((n+1)(1-alpha))``-th smallest held-out good score (rule: flag ``score > t``).

    ``scores``: held-out good-board scores (never test boards). When ``n`` is too small to keep the
    promise (``n < ceil(1/alpha) - 1``), the largest score is used and ``promise_kept`` is False
    (logged): its expected false-alarm rate is ``1 / (n + 1)``.
    """
    if not 0.0 < false_alarm_rate < 1.0:
        raise ValueError(f"false_alarm_rate must be in (0, 1), got {false_alarm_rate}")
    values = np.sort(_finite_1d(scores, "threshold scores"))
    n = values.size
    k = int(math.ceil((n + 1) * (1.0 - false_alarm_rate) - 1e-9))
    kept = k <= n
    if not kept:
        logger.warning(
            "only %d held-out good scores: a %.1f%% false-alarm promise needs at least %d; using the largest "
            "score (expected false-alarm rate %.1f%%)", n, 100 * false_alarm_rate, min_scores_for(false_alarm_rate),
            100.0 / (n + 1),
        )
        k = n
    a, b = n + 1 - k, k
    low, high = stats.beta.ppf([0.025, 0.975], a, b)
    return ConformalThreshold(
        threshold=float(values[k - 1]),
        false_alarm_rate=float(false_alarm_rate),
        n_scores=int(n),
        rank=int(k),
        expected_false_alarm_rate=float(a / (n + 1)),
        expected_false_alarm_rate_ci95=(float(low), float(high)),
        promise_kept=bool(kept),
    )


def realised_false_alarm_rate(good_scores: Any, threshold: float) -> tuple[float, tuple[float, float], int, int]:
    """Share of ``good_scores`` flagged (``score > threshold``), its Clopper-Pearson 95 % interval,
    the number flagged and the number of good boards."""
    values = _finite_1d(good_scores, "good scores")
    flagged = int((values > threshold).sum())
    ci = stats.binomtest(flagged, values.size).proportion_ci(confidence_level=0.95, method="exact")
    return flagged / values.size, (float(ci.low), float(ci.high)), flagged, int(values.size)


def fold_assignment(n: int, n_folds: int, seed: int) -> np.ndarray:
    """Fold index of each of ``n`` boards (``sklearn.model_selection.KFold``, shuffled with ``seed``)."""
    from sklearn.model_selection import KFold

    if n_folds < 2:
        raise ValueError(f"n_folds must be >= 2, got {n_folds}")
    if n < n_folds:
        raise ValueError(f"{n} good training boards cannot be split into {n_folds} folds")
    folds = np.empty(n, dtype=np.int64)
    for j, (_, held_out) in enumerate(KFold(n_folds, shuffle=True, random_state=seed).split(np.arange(n))):
        folds[held_out] = j
    return folds


@dataclass
class OutOfFold:
    """Out-of-fold scores: ``scores[i]`` comes from the model fitted without board ``i`` (fold ``folds[i]``).

    ``extra_scores[m]`` (optional): score of an extra image derived from board ``extra_source[m]``
    (e.g. a synthetic defect pasted on it), by the same model that did not train on that board.
    """

    scores: np.ndarray
    folds: np.ndarray
    extra_scores: np.ndarray | None
    fit_seconds: float
    precomputed: Any = None  # the model's training_embeddings(images), when it has them (reusable by a final fit)


def out_of_fold_scores(
    make_model: Callable[[], Any],
    images: np.ndarray,
    *,
    n_folds: int = 5,
    seed: int = 0,
    fit_kwargs: dict[str, Any] | None = None,
    batch_size: int = 16,
    extra_images: np.ndarray | None = None,
    extra_source: np.ndarray | None = None,
) -> OutOfFold:
    """k-fold out-of-fold scores of ``images`` (good boards) for any AnomalyModel.

    For fold ``j``: ``model = make_model()``, ``model.fit(images[not j], val_images=None, **fit_kwargs)``,
    then ``model.score(images[j])`` (and the extra images whose source board is in fold ``j``).
    Models that need validation images to fit should be given them through ``fit_kwargs`` or not use this.
    A model with ``training_embeddings(images, device=..., progress=...)`` (PatchCore) embeds every board once;
    each fold fit then gets its rows as ``precomputed=`` (same bank, no second pass through the backbone).
    """
    images = np.asarray(images)
    n = images.shape[0]
    folds = fold_assignment(n, n_folds, seed)
    scores = np.full(n, np.nan)
    extra_scores = None
    if extra_images is not None:
        extra_source = np.asarray(extra_source, dtype=np.int64)
        if extra_source.shape[0] != np.asarray(extra_images).shape[0]:
            raise ValueError("extra_source needs one source board per extra image")
        extra_scores = np.full(extra_source.shape[0], np.nan)
    start = time.perf_counter()
    fit_kwargs = dict(fit_kwargs or {})
    model = make_model()
    precomputed = None
    if callable(getattr(model, "training_embeddings", None)):
        precomputed = model.training_embeddings(images, device=fit_kwargs.get("device", "auto"), progress=False)
    for j in range(n_folds):
        held_out = folds == j
        model = model if j == 0 else make_model()
        extra = {} if precomputed is None else {"precomputed": precomputed[_kept_rows(held_out)]}
        model.fit(images[~held_out], None, **fit_kwargs, **extra)
        fold_scores, _ = model.score(images[held_out], batch_size=batch_size)
        scores[held_out] = np.asarray(fold_scores, dtype=np.float64)
        if extra_scores is not None:
            rows = np.flatnonzero(held_out[extra_source])
            if rows.size:
                s, _ = model.score(np.asarray(extra_images)[rows], batch_size=batch_size)
                extra_scores[rows] = np.asarray(s, dtype=np.float64)
        logger.info("out-of-fold scores: fold %d/%d done (%d boards held out, %.1f s)", j + 1, n_folds,
                    int(held_out.sum()), time.perf_counter() - start)
    return OutOfFold(scores=scores, folds=folds, extra_scores=extra_scores, fit_seconds=time.perf_counter() - start,
                     precomputed=precomputed)


def _kept_rows(held_out: np.ndarray) -> Any:
    """Index of the rows NOT held out, usable on a numpy array or a torch tensor."""
    return np.flatnonzero(~np.asarray(held_out, dtype=bool))


def threshold_metrics(
    threshold_scores: Any, false_alarm_rate: float, test_good_scores: Any, source: str
) -> dict[str, Any]:
    """``metrics.json`` keys of the operating point: the conformal threshold, what it promises and what it
    does on the good test boards (``test_false_alarm_rate``: false positives / good test boards)."""
    rule = conformal_threshold(threshold_scores, false_alarm_rate)
    realised, realised_ci, flagged, n_good = realised_false_alarm_rate(test_good_scores, rule.threshold)
    return {
        "threshold": rule.threshold,
        "false_alarm_rate": rule.false_alarm_rate,
        "n_threshold_scores": rule.n_scores,
        "threshold_rank": rule.rank,
        "expected_false_alarm_rate": rule.expected_false_alarm_rate,
        "expected_false_alarm_rate_ci95": list(rule.expected_false_alarm_rate_ci95),
        "false_alarm_promise_kept": rule.promise_kept,
        "test_false_alarm_rate": realised,
        "test_false_alarm_rate_ci95": list(realised_ci),
        "test_false_alarms": flagged,
        "threshold_source": source,
        "threshold_rule": (
            f"conformal quantile: the {rule.rank}-th smallest of {rule.n_scores} good-board scores the model never "
            f"trained on ({source}); flag score > threshold. Promised false-alarm rate {false_alarm_rate:.0%}, "
            f"expected {rule.expected_false_alarm_rate:.1%} (95% interval {rule.expected_false_alarm_rate_ci95[0]:.1%}"
            f"-{rule.expected_false_alarm_rate_ci95[1]:.1%})"
        ),
    }
