"""Seeded augmentation: determinism, shape/dtype, real changes, no black borders, config checks."""

from __future__ import annotations


import numpy as np
import pytest

from wood_anomaly.data.augment import AugmentConfig, augment_batch, sample_grid

OFF = dict(hflip=0.0, vflip=0.0, rotation_deg=0.0, shift_frac=0.0, brightness=0.0, contrast=0.0)


@pytest.fixture
def batch() -> np.ndarray:
    rng = np.random.default_rng(0)
    base = rng.integers(40, 220, (6, 48, 48, 3), dtype=np.uint8)
    return base


def test_same_seed_same_output_other_seed_differs(batch):
    cfg = AugmentConfig()
    a = augment_batch(batch, cfg, np.random.default_rng(1))
    b = augment_batch(batch, cfg, np.random.default_rng(1))
    c = augment_batch(batch, cfg, np.random.default_rng(2))
    assert (a == b).all()
    assert not (a == c).all()


def test_shape_dtype_and_actually_changes(batch):
    out = augment_batch(batch, AugmentConfig(), np.random.default_rng(0))
    assert out.shape == batch.shape and out.dtype == np.uint8
    changed = [(o != b).mean() > 0.5 for o, b in zip(out, batch, strict=True)]
    assert all(changed)
    assert (batch == np.random.default_rng(0).integers(40, 220, batch.shape, dtype=np.uint8)).all(), "input modified"


def test_disabled_is_identity_copy(batch):
    out = augment_batch(batch, AugmentConfig(enabled=False), np.random.default_rng(0))
    assert (out == batch).all() and out is not batch
    out = augment_batch(batch, AugmentConfig(**OFF), np.random.default_rng(0))
    assert (out == batch).all()


def test_flips_exact(batch):
    h = augment_batch(batch, AugmentConfig(**{**OFF, "hflip": 1.0}), np.random.default_rng(0))
    assert (h == batch[:, :, ::-1]).all()
    v = augment_batch(batch, AugmentConfig(**{**OFF, "vflip": 1.0}), np.random.default_rng(0))
    assert (v == batch[:, ::-1]).all()


def test_rotation_and_shift_have_no_black_borders():
    img = np.full((4, 40, 40, 3), 180, np.uint8)
    img[:, ::5] = 120  # some structure
    cfg = AugmentConfig(**{**OFF, "rotation_deg": 20.0, "shift_frac": 0.2})
    out = augment_batch(img, cfg, np.random.default_rng(0))
    assert out.min() >= 119  # reflect padding: no value outside the input range appears
    assert not (out == img).all()


def test_brightness_contrast_bounded():
    img = np.full((8, 16, 16, 3), 100, np.uint8)
    out = augment_batch(img, AugmentConfig(**{**OFF, "brightness": 0.2}), np.random.default_rng(0))
    means = out.reshape(8, -1).mean(1)
    assert (means >= 79).all() and (means <= 121).all() and len(set(means.round())) > 1


def test_config_from_dict_rejects_unknown_and_bad_values():
    cfg = AugmentConfig.from_dict({"hflip": 0.0, "rotation_deg": 10})
    assert cfg.hflip == 0.0 and cfg.rotation_deg == 10 and cfg.vflip == 0.5
    with pytest.raises(ValueError, match="rotaton"):
        AugmentConfig.from_dict({"rotaton": 5})
    with pytest.raises(ValueError, match="hflip"):
        AugmentConfig(hflip=1.5)
    with pytest.raises(ValueError):
        AugmentConfig(brightness=-0.1)
    # a params dict works wherever a config does
    out = augment_batch(np.zeros((1, 8, 8, 3), np.uint8), {"enabled": False}, np.random.default_rng(0))
    assert out.shape == (1, 8, 8, 3)
    with pytest.raises(ValueError, match="uint8"):
        augment_batch(np.zeros((1, 8, 8, 3), np.float32), AugmentConfig(), np.random.default_rng(0))


def test_sample_grid_layout(batch):
    grid = sample_grid(batch, AugmentConfig(), seed=0, n=4, n_rows=2, pad=2)
    assert grid.dtype == np.uint8
    assert grid.shape == (3 * (48 + 2) + 2, 4 * (48 + 2) + 2, 3)
    assert (grid[2:50, 2:50] == batch[0]).all()  # originals on top
    assert not (grid[52:100, 2:50] == batch[0]).all()  # augmented below
    assert (sample_grid(batch, AugmentConfig(), seed=0, n=4, n_rows=2) == grid).all()
