"""Synthetic wood: determinism, exact masks, MVTec layout, refusing to overwrite user data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from wood_anomaly.data.layout import load_mask, scan_dataset
from wood_anomaly.data.synthetic import (
    BOARD_DEFECT_TYPES,
    DEFECT_PAINTERS,
    DEFECT_TYPES,
    README_NAME,
    NotASyntheticSetError,
    generate_synthetic_wood,
    render_defect,
    wood_texture,
)

SMALL = dict(n_train=4, n_test_good=2, n_test_defect=8, image_size=48)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_byte_identical_other_seed_differs(tmp_path):
    a = _files(generate_synthetic_wood(tmp_path / "a", seed=7, **SMALL))
    b = _files(generate_synthetic_wood(tmp_path / "b", seed=7, **SMALL))
    c = _files(generate_synthetic_wood(tmp_path / "c", seed=8, **SMALL))
    assert a == b
    assert a.keys() == c.keys()
    assert sum(a[k] != c[k] for k in a if k.endswith(".png")) == sum(k.endswith(".png") for k in a)


def test_layout_is_scannable_and_every_defect_has_a_nonempty_mask(tmp_path):
    root = generate_synthetic_wood(tmp_path / "syn", **SMALL)
    assert "synthetic" in (root / README_NAME).read_text().lower()
    df = scan_dataset(root)
    assert (df.source_split == "train").sum() == 4
    assert ((df.source_split == "test") & (df.label == 0)).sum() == 2
    defects = df[df.label == 1]
    assert sorted(defects.defect_type.value_counts().to_dict().items()) == [(t, 2) for t in sorted(DEFECT_TYPES)]
    for mp in defects.mask_path:
        raw = np.asarray(Image.open(mp))
        assert set(np.unique(raw)) == {0, 255}
        frac = load_mask(mp).mean()
        assert 0.001 < frac < 0.15, (mp, frac)
    img = np.asarray(Image.open(df.path[0]))
    assert img.shape == (48, 48, 3) and img.dtype == np.uint8


@pytest.mark.parametrize("defect_type", sorted(DEFECT_PAINTERS))
def test_masks_are_exact(defect_type):
    """The defect changes the pixels inside its mask, and nothing beyond a thin blur rim."""
    size = 64
    for seed in range(3):
        rng = np.random.default_rng(seed)
        clean = wood_texture(rng, size)
        img = clean.copy()
        mask = render_defect(rng, img, defect_type)
        diff = np.abs(img - clean).max(axis=-1)
        assert mask.any()
        assert (diff[mask] > 2).mean() > 0.9, "most mask pixels must visibly change"
        assert diff[mask].mean() > 15, "the defect must be visible"
        rim = ndimage.binary_dilation(mask, iterations=3)
        assert (diff[~rim] <= 1e-3).all(), "pixels far from the mask must stay untouched"


@pytest.mark.parametrize("defect_type", BOARD_DEFECT_TYPES)
def test_board_scale_defects_have_the_documented_size_and_shape(defect_type):
    """Board-scale knots and resin cover 0.2-7 % of a 256 px board (the shipped set documents 0.4-12 %), a
    grain crack (thin) at least 0.05 %; knots are flat ellipses across the grain (squashed boards), resin and
    cracks run along it (taller than wide)."""
    size = 256
    fractions = []
    for seed in range(12):
        rng = np.random.default_rng(seed)
        img = wood_texture(rng, size)
        mask = render_defect(rng, img, defect_type)
        fractions.append(mask.mean())
        rows, cols = np.nonzero(mask)
        height, width = np.ptp(rows) + 1, np.ptp(cols) + 1
        if defect_type.endswith("knot"):
            assert width > height, (seed, width, height)
        else:
            assert height > width, (seed, width, height)
    assert (0.0005 if defect_type == "grain_crack" else 0.002) <= min(fractions) and max(fractions) <= 0.07, fractions
    assert max(fractions) > 3 * min(fractions), "sizes must vary"


def test_defects_stand_out_from_the_grain(tmp_path):
    """A defect image differs from good ones more inside the mask than elsewhere (not invisible)."""
    root = generate_synthetic_wood(tmp_path / "syn", n_train=2, n_test_good=1, n_test_defect=8, image_size=64)
    df = scan_dataset(root)
    for _, row in df[df.label == 1].iterrows():
        img = np.asarray(Image.open(row.path)).astype(float)
        m = load_mask(row.mask_path).astype(bool)
        local = ndimage.binary_dilation(m, iterations=4) & ~m
        gap = np.abs(img[m].mean(axis=0) - img[local].mean(axis=0)).max()
        assert gap > 8, (row.path, gap)


def test_refuses_non_empty_foreign_folder(tmp_path):
    user = tmp_path / "mine"
    user.mkdir()
    (user / "photo.jpg").write_bytes(b"precious")
    with pytest.raises(NotASyntheticSetError, match="mine"):
        generate_synthetic_wood(user, **SMALL)
    assert (user / "photo.jpg").read_bytes() == b"precious"
    assert not (user / "train").exists()
    # a previous synthetic set plus a user file is refused too
    root = generate_synthetic_wood(tmp_path / "syn", **SMALL)
    (root / "notes.txt").write_text("mine")
    with pytest.raises(NotASyntheticSetError, match="notes.txt"):
        generate_synthetic_wood(root, **SMALL)
    # a file where the folder should be
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotASyntheticSetError):
        generate_synthetic_wood(tmp_path / "file", **SMALL)


def test_regenerates_over_previous_synthetic_set(tmp_path):
    root = tmp_path / "syn"
    root.mkdir()
    (root / ".gitkeep").write_text("")  # hidden files do not make a folder 'non-empty'
    generate_synthetic_wood(root, n_train=6, n_test_good=3, n_test_defect=4, image_size=32)
    generate_synthetic_wood(root, n_train=3, n_test_good=2, n_test_defect=2, image_size=32, defect_types=("knot",))
    df = scan_dataset(root)  # no stale files from the first, larger set
    assert len(df) == 3 + 2 + 2 and set(df.defect_type) == {"good", "knot"}
    assert (root / ".gitkeep").exists()


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="defect_types"):
        generate_synthetic_wood(tmp_path / "x", defect_types=("hole_in_one",), **SMALL)
    with pytest.raises(ValueError, match="n_train"):
        generate_synthetic_wood(tmp_path / "x", n_train=1)
