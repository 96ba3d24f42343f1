"""Nuisance transforms: masks follow geometry, photometric ones keep masks, values clipped, deterministic."""

from __future__ import annotations

import numpy as np
import pytest

from wood_anomaly.data.nuisances import (
    DEFAULT_NUISANCES,
    NuisanceSpec,
    apply_nuisance,
    apply_nuisance_single,
    invert_geometry,
    parse_nuisances,
)

EXTRA_PHOTOMETRIC = {
    "gamma": {"kind": "gamma", "gamma": 0.8},
    "warm": {"kind": "white_balance", "red": 1.08, "blue": 0.92},
    "saturation": {"kind": "saturation", "factor": 0.7},
    "noise": {"kind": "noise", "sigma": 5.0},
}


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
    with pytest.raises(ValueError, match="unknown kind 'turn90'"):
        parse_nuisances({"x": {"kind": "turn90"}})
    with pytest.raises(ValueError, match="missing parameter"):
        parse_nuisances({"x": {"kind": "rotate"}})
    with pytest.raises(ValueError, match="whole number"):
        parse_nuisances({"x": {"kind": "shift", "dx": 2.5}})
    assert parse_nuisances({"warm": {"kind": "white_balance", "red": 1.1}})["warm"].params == {
        "red": 1.1, "green": 1.0, "blue": 1.0}
    assert parse_nuisances({"n": {"kind": "noise", "sigma": 3}})["n"].params == {"sigma": 3.0, "seed": 0}
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


@pytest.mark.parametrize("spec", list(EXTRA_PHOTOMETRIC.values()), ids=list(EXTRA_PHOTOMETRIC))
def test_extra_photometric_keep_masks_change_pixels_and_repeat(batch, spec):
    images, masks = batch
    before = images.copy()
    out, out_masks = apply_nuisance(spec, images, masks)
    assert (out_masks == masks).all() and out.dtype == np.uint8 and out.shape == images.shape
    assert (out != images).mean() > 0.3, f"{spec} changed almost nothing"
    assert (images == before).all(), "input modified"
    again, _ = apply_nuisance(spec, images, masks)
    assert (again == out).all(), "not deterministic"


def test_extra_photometric_values():
    px = np.array([[[[64, 128, 200]]]], np.uint8)
    g, _ = apply_nuisance({"kind": "gamma", "gamma": 0.5}, px)
    assert g[0, 0, 0].tolist() == [128, 181, 226]  # 255 * sqrt(x / 255)
    wb, _ = apply_nuisance({"kind": "white_balance", "red": 1.5, "blue": 0.5}, px)
    assert wb[0, 0, 0].tolist() == [96, 128, 100]
    gray, _ = apply_nuisance({"kind": "saturation", "factor": 0.0}, px)
    luma = round(0.299 * 64 + 0.587 * 128 + 0.114 * 200)
    assert gray[0, 0, 0].tolist() == [luma] * 3
    flat = np.full((4, 32, 32, 3), 128, np.uint8)
    noisy, _ = apply_nuisance({"kind": "noise", "sigma": 5.0}, flat)
    assert abs(noisy.astype(float).std() - 5.0) < 0.3 and abs(noisy.astype(float).mean() - 128) < 0.3
    # image i gets the same noise whatever batch it is in; another seed gives other noise
    single, _ = apply_nuisance({"kind": "noise", "sigma": 5.0}, flat[:1])
    assert (single[0] == noisy[0]).all() and not (noisy[0] == noisy[1]).all()
    other, _ = apply_nuisance({"kind": "noise", "sigma": 5.0, "seed": 1}, flat)
    assert not (other == noisy).all()


def test_shift_moves_image_and_mask_and_inverts(batch):
    images, _ = batch
    masks = np.zeros(images.shape[:3], np.uint8)
    masks[:, 8:12, 10:16] = 1  # away from the border (a box at the border would be mirrored in, mask too)
    images = np.where(masks[..., None].astype(bool), np.uint8(250), images)
    out, out_masks = apply_nuisance({"kind": "shift", "dx": 5, "dy": 3}, images, masks)
    expected = np.zeros_like(masks)
    expected[:, 11:15, 15:21] = 1  # the box moved 3 down, 5 right
    assert (out_masks == expected).all() and (out[out_masks.astype(bool)] == 250).all()
    assert (out[:, :3, 5:] == images[:, 2::-1, :-5]).all()  # the uncovered top rows mirror the edge
    assert (out[:, 3:, 5:] == images[:, :-3, :-5]).all()
    back = invert_geometry({"kind": "shift", "dx": 5, "dy": 3}, out_masks.astype(np.float32))
    assert (back[:, :-3, :-5] == masks[:, :-3, :-5]).all()  # exact where nothing came from the border
    with pytest.raises(ValueError, match="smaller than the image"):
        apply_nuisance({"kind": "shift", "dx": 40, "dy": 0}, images)


def test_rotate_moves_mask_with_image_and_inverts():
    images = np.full((1, 41, 41, 3), 60, np.uint8)
    masks = np.zeros((1, 41, 41), np.uint8)
    masks[0, 18:23, 30:36] = 1  # right of the centre
    images[masks.astype(bool)] = 250
    out, out_masks = apply_nuisance({"kind": "rotate", "degrees": 30}, images, masks)
    ys, xs = np.nonzero(out_masks[0])  # the box centre (20, 32.5) turns counter-clockwise about (20, 20)
    assert xs.mean() == pytest.approx(20 + 12.5 * np.cos(np.pi / 6), abs=1)
    assert ys.mean() == pytest.approx(20 - 12.5 * np.sin(np.pi / 6), abs=1)
    inside = out[0][out_masks[0].astype(bool)].astype(float)
    assert inside.min() > 150 and inside.mean() > 220  # bilinear image, nearest mask: edges are mixed
    small, small_masks = apply_nuisance({"kind": "rotate", "degrees": 3}, images, masks)
    assert 0 < (small_masks != masks).sum() < masks.sum()
    back = invert_geometry({"kind": "rotate", "degrees": 3}, small_masks.astype(np.float32))
    assert np.abs(back - masks)[:, 5:-5, 5:-5].mean() < 0.02


def test_inverse_of_flips_and_photometric():
    maps = np.arange(2 * 4 * 6, dtype=np.float32).reshape(2, 4, 6)
    for name in ("hflip", "vflip", "rot180"):
        moved, _ = apply_nuisance(name, np.repeat(maps[..., None], 3, -1).astype(np.uint8))
        assert (invert_geometry(name, moved[..., 0].astype(np.float32)) == maps).all()
    assert invert_geometry("jpeg", maps) is maps
