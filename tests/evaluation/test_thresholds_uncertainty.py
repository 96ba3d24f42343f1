"""The threshold rule keeps its false-alarm promise; bootstrap intervals behave on known cases."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from wood_anomaly.evaluation.metrics import aupro, pixel_metrics
from wood_anomaly.evaluation.thresholds import (
    conformal_threshold,
    fold_assignment,
    out_of_fold_scores,
    realised_false_alarm_rate,
)
from wood_anomaly.evaluation.uncertainty import (
    PixelSummary,
    bootstrap_intervals,
    paired_auroc_differences,
    stratified_counts,
    tpr_at_false_alarm,
)


@pytest.mark.parametrize("dist", [stats.norm(), stats.lognorm(1.0), stats.expon()], ids=["normal", "lognormal", "exponential"])
def test_conformal_threshold_keeps_its_promise_on_many_draws(dist):
    rng = np.random.default_rng(1)
    rates = []
    for _ in range(4000):
        t = conformal_threshold(dist.rvs(size=70, random_state=rng), 0.05)
        rates.append(float(dist.sf(t.threshold)))  # the threshold's true false-alarm rate
    assert t.n_scores == 70 and t.rank == 68 and t.promise_kept
    assert t.expected_false_alarm_rate == pytest.approx(3 / 71)
    # the average false-alarm rate matches the expectation (3/71 = 4.2%) and stays below alpha
    assert np.mean(rates) == pytest.approx(3 / 71, abs=0.003)
    low, high = t.expected_false_alarm_rate_ci95
    inside = np.mean([(low <= r <= high) for r in rates])
    assert 0.93 <= inside <= 0.97  # the Beta interval covers ~95% of the draws' rates


def test_mean_plus_k_std_on_seven_scores_breaks_the_promise_the_conformal_rule_does_not():
    rng = np.random.default_rng(2)
    old, new = [], []
    for _ in range(2000):
        val = rng.lognormal(size=7)
        good = rng.lognormal(size=200)
        old.append((good > val.mean() + 1.645 * val.std(ddof=1)).mean())
        new.append((good > conformal_threshold(rng.lognormal(size=70), 0.05).threshold).mean())
    assert np.mean(old) > 0.06 and np.mean(new) < 0.05


def test_too_few_scores_uses_the_maximum_and_says_the_promise_is_not_kept():
    t = conformal_threshold([1.0, 2.0, 3.0], 0.05)
    assert t.threshold == 3.0 and not t.promise_kept and t.expected_false_alarm_rate == pytest.approx(0.25)
    with pytest.raises(ValueError, match="false_alarm_rate"):
        conformal_threshold([1.0], 0.0)
    with pytest.raises(ValueError, match="NaN"):
        conformal_threshold([1.0, np.nan], 0.05)


def test_realised_false_alarm_rate_with_clopper_pearson_interval():
    rate, (low, high), flagged, n = realised_false_alarm_rate(np.arange(70.0), 65.5)
    assert (rate, flagged, n) == (4 / 70, 4, 70)
    assert low < rate < high and high < 0.15


class _MeanModel:
    """Tiny AnomalyModel: score = distance of the image mean from the training mean."""

    fitted_on: list[int] = []

    def fit(self, train_images, val_images=None, **kwargs):
        type(self).fitted_on.append(len(train_images))
        self.mu = float(np.asarray(train_images, dtype=np.float64).mean())
        return self

    def score(self, images, *, batch_size=16):
        m = np.asarray(images, dtype=np.float64).reshape(len(images), -1).mean(1)
        return np.abs(m - self.mu), np.zeros((len(images), 2, 2))


def test_out_of_fold_scores_use_only_the_fold_model_that_did_not_see_the_board():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, size=(20, 4, 4, 3)).astype(np.uint8)
    _MeanModel.fitted_on = []
    oof = out_of_fold_scores(_MeanModel, images, n_folds=4, seed=0, extra_images=images[:3], extra_source=np.arange(3))
    assert _MeanModel.fitted_on == [15, 15, 15, 15]
    folds = fold_assignment(20, 4, 0)
    np.testing.assert_array_equal(oof.folds, folds)
    for i in range(20):
        train = images[folds != folds[i]].astype(np.float64)
        assert oof.scores[i] == pytest.approx(abs(images[i].astype(np.float64).mean() - train.mean()))
    np.testing.assert_allclose(oof.extra_scores, oof.scores[:3])
    np.testing.assert_array_equal(out_of_fold_scores(_MeanModel, images, n_folds=4, seed=0).scores, oof.scores)


def _labels_scores(n_good=70, n_def=71):
    labels = np.r_[np.zeros(n_good, int), np.ones(n_def, int)]
    return labels


def test_perfect_ranking_gives_degenerate_interval_at_one():
    labels = _labels_scores()
    scores = labels + np.linspace(0, 0.5, labels.size)
    ci = bootstrap_intervals(labels, scores, threshold=0.9, n_resamples=1000, seed=0)
    assert ci["image_auroc_ci95"] == [1.0, 1.0]
    assert ci["image_f1_ci95"] == [1.0, 1.0]
    assert ci["tpr_at_far"]["0.01"]["ci95"] == [1.0, 1.0]


def test_random_ranking_interval_contains_one_half_and_is_reproducible():
    labels = _labels_scores()
    scores = np.random.default_rng(3).normal(size=labels.size)
    a = bootstrap_intervals(labels, scores, threshold=0.0, n_resamples=1000, seed=0)
    b = bootstrap_intervals(labels, scores, threshold=0.0, n_resamples=1000, seed=0)
    low, high = a["image_auroc_ci95"]
    assert low < 0.5 < high and 0.1 < high - low < 0.25
    assert a == b
    point = roc_auc_score(labels, scores)
    assert low < point < high


def test_stratified_counts_keep_the_class_sizes():
    labels = _labels_scores(5, 7)
    counts = stratified_counts(labels, 50, seed=1)
    np.testing.assert_array_equal(counts[:, labels == 0].sum(1), 5)
    np.testing.assert_array_equal(counts[:, labels == 1].sum(1), 7)


def test_tpr_at_false_alarm_full_sample():
    labels = np.r_[np.zeros(10, int), np.ones(4, int)]
    scores = np.r_[np.arange(10.0), [8.5, 9.5, 3.0, 20.0]]
    # 10% of 10 good boards = 1 allowed above the threshold -> threshold = 2nd highest good (8)
    assert tpr_at_false_alarm(labels, scores, 0.10) == pytest.approx(3 / 4)
    assert tpr_at_false_alarm(labels, scores, 0.01) == pytest.approx(2 / 4)  # threshold = 9


def test_pixel_summary_matches_exact_pixel_metrics_on_the_full_sample():
    rng = np.random.default_rng(0)
    masks = np.zeros((8, 32, 32), bool)
    masks[4:, 10:16, 10:18] = True
    masks[6:, 20:24, 2:6] = True
    maps = rng.normal(size=masks.shape).astype(np.float32) + 1.5 * masks
    exact = pixel_metrics(masks, maps, np.ones(8, bool), fpr_limit=0.3)
    summary = PixelSummary(masks, maps, fpr_limit=0.3)
    ones = np.ones((1, 8))
    assert summary.pixel_auroc(ones)[0] == pytest.approx(exact["pixel_auroc"], abs=2e-3)
    assert summary.aupro(ones)[0] == pytest.approx(aupro(masks, maps, 0.3), abs=5e-3)


def test_paired_differences_flag_only_real_leads():
    labels = _labels_scores()
    rng = np.random.default_rng(5)
    strong = labels * 2.0 + rng.normal(size=labels.size)
    weak = labels * 0.3 + rng.normal(size=labels.size)
    twin = strong + rng.normal(scale=0.01, size=labels.size)
    rows = {(r["model_a"], r["model_b"]): r for r in paired_auroc_differences(
        labels, {"strong": strong, "weak": weak, "twin": twin}, n_resamples=1000)}
    assert rows[("strong", "weak")]["significant"] and rows[("strong", "weak")]["difference"] > 0
    assert not rows[("strong", "twin")]["significant"]
