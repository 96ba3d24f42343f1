"""Metrics against hand-computed cases and an independent brute-force AUPRO."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage
from sklearn.metrics import roc_auc_score

from wood_anomaly.evaluation.metrics import (
    aupro,
    evaluate,
    f1_max,
    image_metrics,
    off_defect_auroc,
    pixel_metrics,
    predict,
    validation_threshold,
)

# ------------------------------------------------------------------ threshold rule ----------


def test_threshold_is_mean_plus_k_sample_std() -> None:
    assert validation_threshold([1.0, 2.0, 3.0], k=3.0) == pytest.approx(5.0)  # 2 + 3 * 1
    assert validation_threshold([1.0, 2.0, 3.0], k=0.0) == pytest.approx(2.0)
    assert validation_threshold(np.array([[1.0, 3.0]]), k=1.0) == pytest.approx(2 + math.sqrt(2))


def test_threshold_of_a_single_score_keeps_that_image_good() -> None:
    assert validation_threshold([2.0]) == pytest.approx(2.0 * (1 + 1e-6), rel=1e-12)
    for score in (2.0, 0.0, -3.0):
        threshold = validation_threshold([score])
        assert predict([score], threshold)[0] == 0
        assert threshold == pytest.approx(score, abs=1e-5)


@pytest.mark.parametrize("bad", [[], np.array([]), [1.0, float("nan")], [float("inf")]])
def test_threshold_refuses_empty_or_non_finite(bad) -> None:
    with pytest.raises(ValueError):
        validation_threshold(bad)


def test_threshold_does_not_depend_on_test_data() -> None:
    rng = np.random.default_rng(0)
    val = rng.normal(size=10)
    scores = rng.normal(size=40)
    labels = np.repeat([0, 1], 20)
    a = evaluate(labels, scores, val)
    b = evaluate(rng.permutation(labels), scores, val)
    c = evaluate(labels, scores + 100, val)
    assert a["threshold"] == b["threshold"] == c["threshold"] == validation_threshold(val)
    assert a["f1_max_threshold"] != c["f1_max_threshold"]  # the oracle one does move


# ------------------------------------------------------------------ image metrics -----------


def test_perfect_separation() -> None:
    result = image_metrics([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9], threshold=0.5)
    assert result["image_auroc"] == 1.0 and result["f1_max"] == 1.0
    assert result["image_f1"] == result["image_accuracy"] == 1.0
    assert (result["tp"], result["fp"], result["tn"], result["fn"]) == (2, 0, 2, 0)
    assert result["f1_max_threshold"] == pytest.approx(0.5)  # halfway between 0.2 and 0.8


def test_hand_computed_case() -> None:
    labels = [0, 0, 0, 1, 1, 1]
    scores = [1.0, 2.0, 5.0, 3.0, 4.0, 6.0]
    result = image_metrics(labels, scores, threshold=3.5)
    # predicted defect: 5 (fp), 4 and 6 (tp); 3 is missed (fn)
    assert (result["tp"], result["fp"], result["tn"], result["fn"]) == (2, 1, 2, 1)
    assert result["image_precision"] == pytest.approx(2 / 3)
    assert result["image_recall"] == pytest.approx(2 / 3)
    assert result["image_f1"] == pytest.approx(2 / 3)
    assert result["image_accuracy"] == pytest.approx(4 / 6)
    assert result["image_auroc"] == pytest.approx(7 / 9)  # 7 of 9 (defect, good) pairs ordered
    # oracle: flag score >= 3 -> tp 3, fp 1: F1 = 6/7, threshold between 2 and 3
    assert result["f1_max"] == pytest.approx(6 / 7)
    assert result["f1_max_threshold"] == pytest.approx(2.5)
    assert (result["n_good"], result["n_defect"]) == (3, 3)


def test_oracle_threshold_reproduces_oracle_f1_with_strict_rule() -> None:
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 60)
    scores = np.round(rng.normal(size=60) + labels, 1)  # many ties
    best, threshold = f1_max(labels, scores)
    assert image_metrics(labels, scores, threshold)["image_f1"] == pytest.approx(best)
    for t in np.unique(scores):  # nothing beats it
        assert image_metrics(labels, scores, t - 1e-9)["image_f1"] <= best + 1e-12


def test_score_equal_to_threshold_is_good() -> None:
    result = image_metrics([0, 1], [1.0, 2.0], threshold=2.0)
    assert (result["tp"], result["fn"]) == (0, 1)


def test_metrics_are_plain_python_numbers() -> None:
    result = evaluate([0, 1, 0, 1], np.float32([0.1, 0.9, 0.3, 0.7]), np.float32([0.1, 0.2]))
    assert all(type(v) in (int, float) for v in result.values())


@pytest.mark.parametrize(
    ("labels", "scores", "message"),
    [([0, 0], [0.1, 0.2], "good and defect"), ([0, 2], [0.1, 0.2], "0 .good. or 1"),
     ([0, 1, 1], [0.1, 0.2], "3 entries"), ([0, 1], [0.1, float("nan")], "NaN")],
)
def test_image_metrics_input_errors(labels, scores, message) -> None:
    with pytest.raises(ValueError, match=message):
        image_metrics(labels, scores, 0.5)


# ------------------------------------------------------------------ pixel metrics -----------


def _brute_force_aupro(masks: np.ndarray, maps: np.ndarray, fpr_limit: float) -> float:
    """Threshold-by-threshold PRO curve, written independently of the vectorised one."""
    regions = []
    for mask, amap in zip(masks, maps, strict=True):
        labelled, count = ndimage.label(mask > 0, structure=np.ones((3, 3)))
        regions += [amap[labelled == r] for r in range(1, count + 1)]
    negatives = maps[masks == 0]
    points = [(0.0, 0.0)]
    for t in np.unique(maps)[::-1]:
        points.append((float(np.mean(negatives >= t)),
                       float(np.mean([np.mean(r >= t) for r in regions]))))
    area, (x0, y0) = 0.0, points[0]
    for x1, y1 in points[1:]:
        if x1 > fpr_limit:
            y1 = y0 + (y1 - y0) * (fpr_limit - x0) / (x1 - x0)
            area += (fpr_limit - x0) * (y0 + y1) / 2
            break
        area += (x1 - x0) * (y0 + y1) / 2
        x0, y0 = x1, y1
    return area / fpr_limit


def test_aupro_hand_computed() -> None:
    masks = np.array([[[1, 0, 0, 1]]])  # two one-pixel regions, two defect-free pixels
    maps = np.array([[[0.9, 0.5, 0.1, 0.3]]])
    # curve: (0,0) -> 0.9: (0, .5) -> 0.5: (.5, .5) -> 0.3: (.5, 1) -> 0.1: (1, 1)
    assert aupro(masks, maps, fpr_limit=0.3) == pytest.approx(0.5)
    assert aupro(masks, maps, fpr_limit=1.0) == pytest.approx(0.75)
    assert aupro(masks, masks.astype(np.uint8)) == pytest.approx(1.0)  # integer maps
    with pytest.raises(ValueError, match="NaN"):
        aupro(masks, maps * np.nan)


def test_aupro_uses_8_connected_regions() -> None:
    mask = np.zeros((1, 4, 4), dtype=np.uint8)
    mask[0, 0, 0] = mask[0, 0, 1] = mask[0, 1, 2] = 1  # one region only through a diagonal
    amap = np.zeros((1, 4, 4))
    amap[0, 1, 2] = 1.0  # finds one pixel of the three
    # one region of 3 pixels: PRO 1/3 at FPR 0, then (1, 1); interpolated at 0.3
    expected = (1 / 3 + (1 / 3 + 0.3 * 2 / 3)) / 2
    assert aupro(mask, amap) == pytest.approx(expected)  # 4-connected would give 0.5 -> 0.575


def test_aupro_per_region_not_per_pixel() -> None:
    mask = np.zeros((1, 8, 8), dtype=np.uint8)
    mask[0, :3, :3] = 1  # big region, found
    mask[0, 6, 6] = 1  # small region, missed
    amap = mask.astype(float).copy()
    amap[0, 6, 6] = 0.0
    # PRO at FPR 0 is (1 + 0) / 2 = 0.5 (per pixel it would be 0.9)
    assert aupro(mask, amap) == pytest.approx((0.5 + (0.5 + 0.3 * 0.5)) / 2)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("fpr_limit", [0.05, 0.3, 1.0])
def test_aupro_matches_brute_force(seed: int, fpr_limit: float) -> None:
    rng = np.random.default_rng(seed)
    smooth = ndimage.gaussian_filter(rng.random((3, 12, 12)), (0, 1.5, 1.5))
    masks = (smooth > 0.56).astype(np.uint8)
    masks[2] = 0  # a good image
    maps = np.round(masks * rng.random() + rng.random((3, 12, 12)), 1)  # ties on purpose
    assert masks.any()
    expected = _brute_force_aupro(masks, maps, fpr_limit)
    assert aupro(masks, maps, fpr_limit) == pytest.approx(expected)


def test_perfect_and_random_maps() -> None:
    rng = np.random.default_rng(0)
    masks = np.zeros((8, 32, 32), dtype=np.uint8)
    masks[:4, 5:12, 8:20] = 1
    masks[:2, 20:25, 20:30] = 1
    has_mask = np.ones(8, dtype=bool)
    perfect = pixel_metrics(masks, masks.astype(np.float32), has_mask)
    assert perfect == {"pixel_auroc": 1.0, "aupro": pytest.approx(1.0)}
    random = pixel_metrics(masks, rng.random(masks.shape), has_mask)
    assert 0.4 < random["pixel_auroc"] < 0.6
    assert 0.1 < random["aupro"] < 0.2  # PRO ~ FPR: area ~ 0.3**2 / 2 / 0.3 = 0.15


def test_pixel_metrics_only_use_images_with_masks() -> None:
    masks = np.zeros((3, 8, 8), dtype=np.uint8)
    masks[0, 2:5, 2:5] = 1
    maps = masks.astype(np.float32)
    maps[2] = 10.0  # awful map, but its image has no mask
    with_all = pixel_metrics(masks, maps, [True, True, True])
    selected = pixel_metrics(masks, maps, [True, True, False])
    assert selected == {"pixel_auroc": 1.0, "aupro": pytest.approx(1.0)}
    assert with_all["pixel_auroc"] < 1.0


def test_pixel_metrics_skip_when_undefined() -> None:
    masks = np.zeros((2, 4, 4), dtype=np.uint8)
    maps = np.zeros((2, 4, 4), dtype=np.float32)
    assert pixel_metrics(masks, maps, [False, False]) == {}
    assert pixel_metrics(masks, maps, [True, True]) == {}  # no defect pixel
    assert pixel_metrics(np.ones_like(masks), maps, [True, True]) == {}  # no good pixel


def test_pixel_auroc_subsampling_is_deterministic_and_close() -> None:
    rng = np.random.default_rng(1)
    masks = (rng.random((4, 64, 64)) < 0.1).astype(np.uint8)
    maps = masks + rng.normal(size=masks.shape)
    full = pixel_metrics(masks, maps, np.ones(4, bool))
    sub_a = pixel_metrics(masks, maps, np.ones(4, bool), max_pixels=5000)
    sub_b = pixel_metrics(masks, maps, np.ones(4, bool), max_pixels=5000)
    assert full["pixel_auroc"] == pytest.approx(roc_auc_score(masks.ravel(), maps.ravel()))
    assert sub_a == sub_b
    assert sub_a["pixel_auroc"] != full["pixel_auroc"]
    assert sub_a["pixel_auroc"] == pytest.approx(full["pixel_auroc"], abs=0.03)
    assert sub_a["aupro"] == full["aupro"]  # AUPRO always uses every pixel


def test_aupro_on_the_real_set_size() -> None:
    rng = np.random.default_rng(0)
    masks = np.zeros((141, 256, 256), dtype=np.uint8)
    masks[:71, 100:120, 50:90] = 1
    maps = (masks + rng.normal(size=masks.shape)).astype(np.float32)
    value = aupro(masks, maps)
    assert 0.2 < value < 1.0


# ------------------------------------------------------------------ evaluate ----------------


def test_evaluate_combines_everything() -> None:
    masks = np.zeros((4, 8, 8), dtype=np.uint8)
    masks[2:, 1:4, 1:4] = 1
    maps = masks.astype(np.float32)
    result = evaluate([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9], [0.1, 0.15, 0.2], masks=masks,
                      maps=maps, threshold_k=2.0)
    assert result["threshold"] == pytest.approx(validation_threshold([0.1, 0.15, 0.2], k=2.0))
    assert result["threshold_k"] == 2.0 and result["n_val"] == 3
    assert result["image_auroc"] == 1.0 and result["pixel_auroc"] == 1.0
    assert result["aupro"] == pytest.approx(1.0)
    assert "pixel_auroc" not in evaluate([0, 1], [0.1, 0.9], [0.1, 0.2])


@pytest.mark.real_data
def test_pixel_metrics_on_the_real_masks(real_data) -> None:
    from PIL import Image

    files = sorted((real_data / "ground_truth" / "defect").glob("*_mask.png"))
    assert len(files) == 71
    defect = np.stack([np.asarray(Image.open(f).convert("L")) > 127 for f in files])
    masks = np.concatenate([defect, np.zeros((70, *defect.shape[1:]), bool)]).astype(np.uint8)
    has_mask = np.ones(len(masks), dtype=bool)
    perfect = pixel_metrics(masks, masks.astype(np.float32), has_mask, max_pixels=1_000_000)
    assert perfect["pixel_auroc"] == 1.0 and perfect["aupro"] == pytest.approx(1.0)
    blurred = ndimage.gaussian_filter(masks.astype(np.float32), (0, 8, 8))
    value = aupro(masks, blurred)
    assert 0.5 < value < 1.0  # blur spills onto good pixels and fades small regions


def test_false_alarm_rate_sets_k_of_the_normal_fit():
    from wood_anomaly.evaluation.metrics import threshold_k_for_false_alarm_rate

    assert threshold_k_for_false_alarm_rate(0.05) == pytest.approx(1.6449, abs=1e-4)
    assert threshold_k_for_false_alarm_rate(0.00135) == pytest.approx(3.0, abs=1e-3)
    with pytest.raises(ValueError):
        threshold_k_for_false_alarm_rate(0.0)


def _boards_with_square_defects(n: int = 12, size: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """n good then n defective boards: noise maps, a bright 8x8 defect (with its mask) on each defective one."""
    rng = np.random.default_rng(seed)
    maps = rng.normal(0.0, 1.0, (2 * n, size, size)).astype(np.float32)
    masks = np.zeros(maps.shape, dtype=np.uint8)
    for i in range(n, 2 * n):
        y, x = rng.integers(8, size - 16, 2)
        masks[i, y : y + 8, x : x + 8] = 1
        maps[i, y : y + 8, x : x + 8] += 10.0
    labels = np.r_[np.zeros(n, int), np.ones(n, int)]
    return labels, maps, masks


def test_off_defect_auroc_is_chance_when_only_the_defect_lights_up() -> None:
    labels, maps, masks = _boards_with_square_defects()
    out = off_defect_auroc(labels, maps, masks, dilate=4)
    assert out["map_auroc"] == 1.0  # the defect itself separates perfectly
    assert 0.2 < out["off_defect_auroc"] < 0.8  # away from it the maps are the same noise


def test_off_defect_auroc_sees_a_whole_board_shift_and_ignores_unmasked_defects() -> None:
    labels, maps, masks = _boards_with_square_defects()
    maps[labels == 1] += 0.5  # defective boards brighter everywhere: a board-level difference
    assert off_defect_auroc(labels, maps, masks, dilate=4)["off_defect_auroc"] > 0.95
    has_mask = np.ones(labels.size, bool)
    has_mask[labels == 1] = False  # no defect with a mask: nothing to measure
    assert off_defect_auroc(labels, maps, masks, has_mask, dilate=4) == {}
    with pytest.raises(ValueError, match="same"):
        off_defect_auroc(labels, maps[:, :32], masks)
