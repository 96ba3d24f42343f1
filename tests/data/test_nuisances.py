"""Nuisance transforms: masks follow geometry, photometric ones keep masks, values clipped, deterministic."""

from __future__ import annotations

import numpy as np
import pytest

from wood_anomaly.data.nuisances import (
    DEFAULT_NUISANCES,
    NuisanceSpec,
    apply_nuisance,
    apply_nuisance_single,
    parse_nuisances,
)


@pytest.fixture
def batch() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    images = rng.integers(30, 226, (3, 24, 32, 3), dtype=np.uint8)
    masks = np.zeros((3, 24, 32), np.uint8)
    masks[:, 2:6, 3:9] = 1  # top-left box, asymmetric
    images[:, 2:6, 3:9] = 250  # a bright "defect" under the mask
    return images, masks


@pytest.mark.parametrize(
    ("name", "where"),
    [("hflip", (slice(2, 6), slice(32 - 9, 32 - 3))), ("vflip", (slice(24 - 6, 24 - 2), slice(3, 9))),
     ("rot180", (slice(24 - 6, 24 - 2), slice(32 - 9, 32 - 3)))],
)
def test_geometric_moves_image_and_mask_together(batch, name, where):
    images, masks = batch
    out, out_masks = apply_nuisance(name, images, masks)
    assert out.shape == images.shape and out.dtype == np.uint8
    expected = np.zeros_like(masks)
    expected[(slice(None), *where)] = 1
    assert (out_masks == expected).all()
    assert (out[out_masks.astype(bool)] == 250).all()  # the defect pixels went where the mask went
    # the transform is an involution: applying it twice gives the input back
    back, back_masks = apply_nuisance(name, out, out_masks)
    assert (back == images).all() and (back_masks == masks).all()


@pytest.mark.parametrize("name", ["brightness_up", "brightness_down", "contrast_down", "jpeg", "blur"])
def test_photometric_keep_masks_and_change_pixels(batch, name):
    images, masks = batch
    before = images.copy()
    out, out_masks = apply_nuisance(name, images, masks)
    assert (out_masks == masks).all() and out_masks is not masks
    assert out.dtype == np.uint8 and out.shape == images.shape
    assert (out != images).mean() > 0.3, f"{name} changed almost nothing"
    assert (images == before).all(), "input modified"


def test_brightness_and_contrast_values_and_clipping():
    img = np.array([[[[0, 100, 250]]]], np.uint8)  # one pixel
    up, _ = apply_nuisance("brightness_up", img)
    assert up[0, 0, 0].tolist() == [0, 110, 255]  # 250 * 1.1 = 275 -> clipped
    down, _ = apply_nuisance("brightness_down", img)
    assert down[0, 0, 0].tolist() == [0, 90, 225]
    two = np.array([[[[0, 0, 0], [200, 200, 200]]]], np.uint8)  # mean gray 100
    c, _ = apply_nuisance({"kind": "contrast", "factor": 0.5}, two)
    assert c[0, 0].tolist() == [[50, 50, 50], [150, 150, 150]]
    hi, _ = apply_nuisance({"kind": "contrast", "factor": 3.0}, two)
    assert hi[0, 0].tolist() == [[0, 0, 0], [255, 255, 255]]  # clipped both ways


def test_blur_smooths_and_keeps_mean():
    img = np.zeros((1, 21, 21, 3), np.uint8)
    img[0, 10, 10] = 255
    out, _ = apply_nuisance("blur", img)
    assert out[0, 10, 10, 0] < 255 and out[0, 10, 11, 0] > 0 and out[0, 0, 0, 0] == 0
    flat = np.full((1, 16, 16, 3), 77, np.uint8)
    assert (apply_nuisance("blur", flat)[0] == 77).all()


def test_deterministic(batch):
    images, masks = batch
    for name in DEFAULT_NUISANCES:
        a, am = apply_nuisance(name, images, masks)
        b, bm = apply_nuisance(name, images, masks)
        assert (a == b).all() and (am == bm).all(), name


def test_masks_optional_and_single_image(batch):
    images, _ = batch
    out, m = apply_nuisance("jpeg", images)
    assert m is None and out.shape == images.shape
    one = apply_nuisance_single("rot180", images[0])
    assert (one == images[0, ::-1, ::-1]).all()


def test_parse_config_defaults_list_and_errors():
    specs = parse_nuisances(None)
    assert list(specs) == list(DEFAULT_NUISANCES)
    assert specs["brightness_up"] == NuisanceSpec("brightness_up", "brightness", {"factor": 1.1})
    assert specs["jpeg"].params == {"quality": 75} and specs["blur"].params == {"sigma": 1.0}
    assert specs["rot180"].geometric and not specs["jpeg"].geometric
    assert parse_nuisances({}) == {}
    assert list(parse_nuisances(["hflip", "blur"])) == ["hflip", "blur"]
    custom = parse_nuisances({"dim": {"kind": "brightness", "factor": 0.5}})
    assert custom["dim"].kind == "brightness" and custom["dim"].to_dict() == {"kind": "brightness", "factor": 0.5}
    with pytest.raises(ValueError, match="unknown kind 'rotate'"):
        parse_nuisances({"x": {"kind": "rotate"}})
    with pytest.raises(ValueError, match="missing parameter"):
        parse_nuisances({"x": {"kind": "brightness"}})
    with pytest.raises(ValueError, match="unknown parameter"):
        parse_nuisances({"x": {"kind": "hflip", "factor": 2}})
    with pytest.raises(ValueError, match="quality"):
        parse_nuisances({"x": {"kind": "jpeg", "quality": 0}})
    with pytest.raises(ValueError, match="uint8 images"):
        apply_nuisance("hflip", np.zeros((2, 8, 8), np.uint8))
    with pytest.raises(ValueError, match="masks"):
        apply_nuisance("hflip", np.zeros((2, 8, 8, 3), np.uint8), np.zeros((2, 8, 7), np.uint8))
