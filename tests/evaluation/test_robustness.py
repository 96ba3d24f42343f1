"""Nuisance robustness metrics: maps turned back to the masks' geometry, false alarms at the model's threshold."""

from __future__ import annotations

import numpy as np
import pytest

from wood_anomaly.evaluation.robustness import (
    flatten_robustness,
    pixel_index,
    robustness_metrics,
    score_under_nuisances,
)


class PixelModel:
    """Map = red channel / 255 (equivariant: a flipped image gives the flipped map); score = max of the
    left half of the map (NOT flip invariant)."""

    def score(self, images, *, batch_size=16):
        maps = images[..., 0].astype(np.float32) / 255.0
        return maps[:, :, : maps.shape[2] // 2].reshape(len(maps), -1).max(1), maps


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    n, h, w = 6, 16, 16
    images = rng.integers(0, 100, (n, h, w, 3), dtype=np.uint8)
    masks = np.zeros((n, h, w), np.uint8)
    labels = np.array([0, 0, 0, 1, 1, 1])
    for i in (3, 4, 5):  # defects: bright boxes in the LEFT half, under their masks
        images[i, 4:8, 2:6, 0] = 250
        masks[i, 4:8, 2:6] = 1
    return images, masks, labels


def test_maps_are_turned_back_so_original_masks_apply(data):
    images, masks, labels = data
    model = PixelModel()
    scores, maps = model.score(images)
    nuis = {"hflip": {"kind": "hflip"}, "rot180": {"kind": "rot180"}, "dim": {"kind": "brightness", "factor": 0.5}}
    out = score_under_nuisances(model, images, nuis, has_mask=labels == 1, plain_maps=maps, max_pixels=10_000)
    assert list(out["nuisance_names"]) == ["hflip", "rot180", "dim"]
    assert out["nuisance_scores"].shape == (3, 6) and out["nuisance_pixel_values"].shape == (3, 3 * 16 * 16)
    # the map is flip-equivariant, so after turning it back it matches the plain map pixel for pixel
    assert np.allclose(out["nuisance_pixel_values"][0], out["plain_pixel_values"], atol=1e-3)
    assert np.allclose(out["nuisance_pixel_values"][1], out["plain_pixel_values"], atol=1e-3)

    result = robustness_metrics({"scores": scores, **out}, labels, threshold=0.5, masks=masks)
    assert list(result) == ["plain", "hflip", "rot180", "dim"]
    assert result["plain"] == {"image_auroc": 1.0, "pixel_auroc": pytest.approx(1.0), "false_alarm_rate": 0.0}
    assert result["hflip"]["pixel_auroc"] == pytest.approx(1.0)  # maps aligned with the original masks
    # the defects moved to the right half, which the image score ignores: AUROC drops
    assert result["hflip"]["image_auroc"] < 0.8 and result["rot180"]["image_auroc"] < 0.8
    # halving the brightness halves every score: the good boards (< 100/255) stay far below the threshold
    assert result["dim"]["false_alarm_rate"] == 0.0


def test_false_alarm_rate_counts_good_boards_over_threshold(data):
    images, masks, labels = data
    scores = np.array([0.1, 0.6, 0.7, 0.9, 0.9, 0.2])
    fake = {
        "scores": scores,
        "nuisance_names": np.array(["x"]),
        "nuisance_scores": np.array([[0.9, 0.9, 0.9, 0.9, 0.9, 0.9]], np.float32),
        "nuisance_pixel_index": np.zeros(0, np.int64),
        "nuisance_pixel_values": np.zeros((1, 0), np.float16),
    }
    result = robustness_metrics(fake, labels, threshold=0.65)
    assert result["plain"]["false_alarm_rate"] == pytest.approx(1 / 3)  # only 0.7 of the goods is > 0.65
    assert result["x"]["false_alarm_rate"] == 1.0 and result["x"]["image_auroc"] == 0.5
    assert np.isnan(result["x"]["pixel_auroc"])
    flat = flatten_robustness(result)
    assert flat["robustness.x.false_alarm_rate"] == 1.0 and "robustness.plain.image_auroc" in flat
    assert robustness_metrics({"scores": scores}, labels, 0.5) == {}  # scored without nuisances


def test_no_nuisances_and_pixel_sampling():
    out = score_under_nuisances(PixelModel(), np.zeros((2, 8, 8, 3), np.uint8), {})
    assert out["nuisance_scores"].shape == (0, 2)
    idx = pixel_index((4, 8, 8), np.array([False, True, False, True]), max_pixels=50, seed=0)
    assert idx.size == 50 and np.all(np.diff(idx) > 0)
    assert set(np.unique(idx // 64)) <= {1, 3}  # only images with masks
    assert (idx == pixel_index((4, 8, 8), np.array([False, True, False, True]), max_pixels=50, seed=0)).all()
    assert pixel_index((4, 8, 8), np.array([False, True, False, False]), max_pixels=1000).size == 64


def test_shift_and_rotate_maps_are_mapped_back_onto_the_original_masks(data):
    images, masks, labels = data
    model = PixelModel()
    scores, maps = model.score(images)
    nuis = {"off_centre": {"kind": "shift", "dx": 2, "dy": 1}, "skew": {"kind": "rotate", "degrees": 4}}
    out = score_under_nuisances(model, images, nuis, has_mask=labels == 1, plain_maps=maps, max_pixels=10_000)
    shifted = out["nuisance_pixel_values"][0].reshape(3, 16, 16).astype(np.float32)
    plain = out["plain_pixel_values"].reshape(3, 16, 16).astype(np.float32)
    # exact except the rows / columns that came from the mirrored border
    assert np.allclose(shifted[:, :-1, :-2], plain[:, :-1, :-2], atol=1e-3)
    result = robustness_metrics({"scores": scores, **out}, labels, threshold=0.5, masks=masks)
    assert result["off_centre"]["pixel_auroc"] == pytest.approx(1.0)
    assert result["skew"]["pixel_auroc"] > 0.95  # bilinear there and back: the defect boxes still line up
