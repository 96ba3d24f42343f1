"""Invariance on a tiny generated set: a flipped good board scores like the original.

The toy boards have a TILTED grain and a left-to-right light ramp, so a flipped board is new to a
model that saw one orientation only. Tolerance (stated once, for every model): the score change of
a good board under a flip must be below TOL of the gap between the mean score of defective boards
and of good boards, i.e. the flip must look much less like a defect than a defect does.
"""

from __future__ import annotations

import numpy as np
import pytest

from wood_anomaly.models.invariance import FLIPS, flip_images, flip_maps, training_copies

SIZE = 64
TOL = 0.25


def boards(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    out = []
    for _ in range(n):
        phase = rng.uniform(0, 2 * np.pi)
        grain = 0.5 + 0.25 * np.sin(0.55 * yy + 0.35 * xx + phase)  # tilted grain
        ramp = 0.75 + 0.5 * xx / SIZE  # light from the right
        img = (grain * ramp)[..., None] * np.array([200, 150, 100], np.float32) + rng.normal(0, 5, (SIZE, SIZE, 3))
        out.append(np.clip(img, 0, 255).astype(np.uint8))
    return np.stack(out)


def with_knot(images: np.ndarray) -> np.ndarray:
    out = images.copy()
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    for i in range(len(out)):
        cy, cx = 20 + 8 * (i % 3), 24 + 6 * (i % 2)
        out[i][(yy - cy) ** 2 + (xx - cx) ** 2 <= 30] = (40, 25, 15)
    return out


TRAIN, GOOD = boards(16, 0), boards(4, 1)
DEFECT = with_knot(boards(4, 2))


def flip_change(model, flips=("h", "v", "hv")) -> tuple[float, float]:
    """(largest |score change| of a good board under a flip, defect-good score gap)."""
    good, _ = model.score(GOOD, batch_size=8)
    defect, _ = model.score(DEFECT, batch_size=8)
    change = max(float(np.abs(model.score(flip_images(GOOD, f), batch_size=8)[0] - good).max()) for f in flips)
    return change, float(defect.mean() - good.mean())


def test_helpers_flip_maps_back_and_copies():
    maps = np.arange(2 * 4 * 5, dtype=np.float32).reshape(2, 4, 5)
    images = np.repeat(maps.astype(np.uint8)[..., None], 3, axis=-1)
    for f in FLIPS:
        assert (flip_images(images, f)[..., 0] == flip_maps(maps, f)).all(), f
        assert (flip_maps(flip_maps(maps, f), f) == maps).all(), f
    copies = list(training_copies(images, ["none", "hv"], [[1.1, 1.0], [1.0, 0.5]]))
    assert len(copies) == 4 and (copies[0] == images).all() and (copies[1] == images[:, ::-1, ::-1]).all()
    assert (copies[2] >= images).all() and copies[3].std() < images.std()


def test_patchcore_flips_in_the_bank_make_a_flipped_board_a_good_board():
    from wood_anomaly.models.patchcore import PatchCore

    cfg = {"coreset_ratio": 0.1, "batch_size": 8}
    plain = PatchCore(**cfg).fit(TRAIN, seed=0, device="cpu", progress=False)
    invariant = PatchCore(**cfg, train_flips=["none", "h", "v", "hv"]).fit(TRAIN, seed=0, device="cpu", progress=False)
    change_plain, gap_plain = flip_change(plain)
    change, gap = flip_change(invariant)
    assert gap > 0
    assert change < TOL * gap, (change, gap)
    assert change_plain > change  # the option is what makes the difference on these tilted boards
    assert invariant.fit_info["n_train_copies"] == 4


def test_padim_flip_tta_is_exactly_invariant_and_train_flips_nearly():
    from wood_anomaly.models.padim import Padim

    cfg = {"image_size": SIZE, "n_features": 24, "batch_size": 8}
    tta = Padim(**cfg, tta_flips=["none", "h", "v", "hv"]).fit(TRAIN, seed=0, device="cpu", progress=False)
    good, maps = tta.score(GOOD)
    for f in ("h", "v", "hv"):
        s, m = tta.score(flip_images(GOOD, f))
        np.testing.assert_allclose(s, good, rtol=1e-4)
        np.testing.assert_allclose(flip_maps(m, f), maps, rtol=1e-3, atol=1e-3)  # maps follow the board
    bank = Padim(**cfg, train_flips=["none", "h", "v", "hv"], train_photometric=[[1.1, 1.0]]).fit(
        TRAIN, seed=0, device="cpu", progress=False
    )
    change, gap = flip_change(bank)
    assert change < TOL * gap, (change, gap)
    assert bank.n_train == 5 * len(TRAIN)
    assert Padim(flip_augment=True).config["train_flips"] == ["none", "h", "v"]  # legacy switch
    with pytest.raises(ValueError, match="tta_flips"):
        Padim(tta_flips=["diagonal"])
    with pytest.raises(ValueError, match="train_photometric"):
        Padim(train_photometric=[1.1])


@pytest.mark.slow
def test_efficientad_flip_tta_makes_a_flipped_board_score_the_same():
    """A few CPU steps of flip augmentation do not make the student flip invariant on these boards
    (measured: a flip changed a good board's score 4x the defect gap); test-time averaging over the
    four flips does, exactly."""
    from wood_anomaly.models.efficientad import EfficientAD

    model = EfficientAD(image_size=SIZE, steps=20, crop_size=32, aug_copies=2, tta_flips=["none", "h", "v", "hv"])
    model.fit(TRAIN, TRAIN[:4], seed=0, device="cpu", progress=False)
    change, gap = flip_change(model)
    assert gap > 0 and change < TOL * gap, (change, gap)
    good, maps = model.score(GOOD)
    s, m = model.score(flip_images(GOOD, "h"))
    np.testing.assert_allclose(s, good, rtol=1e-4)
    np.testing.assert_allclose(flip_maps(m, "h"), maps, rtol=1e-3, atol=1e-4)
    with pytest.raises(ValueError, match="tta_flips"):
        EfficientAD(tta_flips=["diagonal"])


@pytest.mark.slow
@pytest.mark.parametrize(
    ("module", "cls", "cfg"),
    [
        ("autoencoder", "AutoEncoder", {"image_size": 32, "epochs": 8, "filters": [8, 8, 16]}),
        ("vae", "VAE", {"image_size": 32, "epochs": 8, "filters": [8, 8, 16, 16], "latent_dim": 8}),
        ("ganomaly", "GANomaly", {"image_size": 32, "epochs": 8, "base_filters": 8, "latent_dim": 8}),
    ],
)
def test_keras_flip_augmentation_keeps_a_flipped_board_good(module, cls, cfg):
    import importlib

    model_cls = getattr(importlib.import_module(f"wood_anomaly.models.{module}"), cls)
    model = model_cls(**cfg)  # default augmentation: hflip 0.5, vflip 0.5, brightness / contrast 0.1
    model.fit(TRAIN, TRAIN[:4], seed=0, device="cpu", progress=False)
    change, gap = flip_change(model)
    assert gap > 0 and change < TOL * gap, (change, gap)


def test_flip_memo_keys_on_content_and_stays_bounded():
    """FlipMemo: equal bytes find the stored value, other bytes / shapes / contexts do not; the oldest
    entries go once the stored tensors pass max_bytes."""
    import torch

    from wood_anomaly.models.invariance import FlipMemo

    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    memo = FlipMemo(max_bytes=3 * 64 * 4)  # three [64] float32 tensors
    memo.put((memo.key(a), True), (torch.ones(64),))
    assert memo.get((memo.key(a.copy()), True))[0].sum() == 64  # same content, another array
    assert memo.get((memo.key(np.flip(a, 2)[:, :, ::-1]), True))[0].sum() == 64  # same content, strided view
    assert memo.get((memo.key(a), False)) is None  # other context
    assert memo.get((memo.key(a.reshape(2, 8, 24, 1)), True)) is None  # same bytes, other shape
    b = a.copy()
    b[0, 0, 0, 0] ^= 1
    assert memo.get((memo.key(b), True)) is None  # one bit differs
    assert (memo.hits, memo.misses) == (2, 3)
    for i in range(3):
        memo.put((memo.key(a), f"c{i}"), (torch.full((64,), float(i)),))
    assert memo.get((memo.key(a), True)) is None  # the oldest was dropped
    assert memo.get((memo.key(a), "c2"))[0][0] == 2
