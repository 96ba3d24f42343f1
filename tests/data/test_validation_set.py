"""Label-free validation set: determinism, exact masks, row layout, clear errors."""

from __future__ import annotations

import numpy as np
import pytest

from wood_anomaly.data.synthetic import DEFECT_TYPES, VALIDATION_DEFECT_TYPES, paste_defect, wood_texture
from wood_anomaly.data.validation_set import build_validation_set


def _boards(n: int = 5, size: int = 48, seed: int = 3) -> np.ndarray:
    return np.stack(
        [np.clip(np.rint(wood_texture(np.random.default_rng((seed, i)), size)), 0, 255).astype(np.uint8) for i in range(n)]
    )


def test_same_seed_gives_identical_arrays_other_seed_differs():
    good = _boards()
    a = build_validation_set(good, seed=11)
    b = build_validation_set(good.copy(), seed=11)
    c = build_validation_set(good, seed=12)
    for key, value in a.to_arrays().items():
        np.testing.assert_array_equal(value, b.to_arrays()[key], err_msg=key)
    defect = a.labels == 1
    assert not np.array_equal(a.images[defect], c.images[defect])
    np.testing.assert_array_equal(a.images[~defect], c.images[~defect])  # good rows are the inputs themselves


def test_board_defects_do_not_depend_on_how_many_boards_there_are():
    good = _boards(6)
    full = build_validation_set(good, seed=5)
    part = build_validation_set(good[:3], seed=5)
    np.testing.assert_array_equal(part.images[part.labels == 1], full.images[full.labels == 1][:3])


def test_layout_labels_kinds_and_exact_masks():
    good = _boards(5)
    vs = build_validation_set(good, seed=0, defects_per_image=2)
    assert len(vs) == 15 and vs.n_good == 5 and vs.n_defect == 10
    np.testing.assert_array_equal(vs.images[:5], good)
    assert list(vs.kinds[:5]) == ["good"] * 5
    assert set(vs.kinds[5:]) == set(VALIDATION_DEFECT_TYPES)  # round-robin covers every kind (10 copies, 8 kinds)
    assert set(build_validation_set(good, seed=0, kinds=DEFECT_TYPES).kinds[5:]) == set(DEFECT_TYPES)
    np.testing.assert_array_equal(vs.source, [0, 1, 2, 3, 4, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4])
    assert not vs.masks[:5].any()
    for row in range(5, 15):
        mask = vs.masks[row]
        assert mask.sum() > 0
        changed = np.any(vs.images[row] != good[vs.source[row]], axis=-1)
        # every changed pixel lies in the mask (stains may soften up to 2 px beyond it)
        from scipy import ndimage

        assert not (changed & ~ndimage.binary_dilation(mask, iterations=2)).any(), vs.kinds[row]
        assert changed[mask].mean() > 0.5, vs.kinds[row]


@pytest.mark.parametrize("size", [16, 24, 48])
def test_every_kind_pastes_on_small_boards(size):
    """The board-scale kinds scale with the board: tiny test images (16 px, the minimum) get them too."""
    good = _boards(8, size=size)
    vs = build_validation_set(good, seed=1, defects_per_image=2)
    assert set(vs.kinds[8:]) == set(VALIDATION_DEFECT_TYPES)
    assert all(vs.masks[row].any() for row in range(8, len(vs)))


def test_paste_defect_does_not_modify_its_input_and_is_repeatable():
    board = _boards(1)[0]
    before = board.copy()
    img1, m1 = paste_defect(board, np.random.default_rng(1), "knot")
    img2, m2 = paste_defect(board, np.random.default_rng(1), "knot")
    np.testing.assert_array_equal(board, before)
    np.testing.assert_array_equal(img1, img2)
    np.testing.assert_array_equal(m1, m2)
    assert img1.dtype == np.uint8 and m1.dtype == bool and m1.any()


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.zeros((0, 32, 32, 3), np.uint8), "at least one"),
        (np.zeros((2, 32, 32, 3), np.float32), "uint8"),
        (np.zeros((2, 32, 32), np.uint8), r"\[N, H, W, 3\]"),
        (np.zeros((2, 32, 40, 3), np.uint8), "square"),
    ],
)
def test_bad_input_is_a_clear_error(bad, match):
    with pytest.raises(ValueError, match=match):
        build_validation_set(bad, seed=0)


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="unknown defect type"):
        build_validation_set(_boards(2), seed=0, kinds=("hole",))


def test_nuisance_versions_of_the_good_boards():
    from wood_anomaly.data.validation_set import nuisance_versions

    good = _boards(3)
    out = nuisance_versions(good, {"hflip": {"kind": "hflip"}, "dark": {"kind": "brightness", "factor": 0.9}})
    assert list(out) == ["hflip", "dark"]
    np.testing.assert_array_equal(out["hflip"], good[:, :, ::-1])
    assert out["dark"].dtype == np.uint8 and out["dark"].mean() < good.mean()
    default = nuisance_versions(good)
    assert {"hflip", "vflip", "rot180", "brightness_up", "brightness_down", "contrast_down", "jpeg", "blur"} <= set(default)
    for name, images in default.items():
        assert images.shape == good.shape, name
