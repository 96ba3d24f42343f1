"""PaDiM: shapes, exact save/load round trip, saved channel subset, toy defect, real-data AUROC floor."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from wood_anomaly.data.synthetic import wood_texture
from wood_anomaly.models.padim import Padim
from wood_anomaly.models.maps import gaussian_blur_maps

SMALL = dict(image_size=64, grid_stride=4, n_features=40, batch_size=8)


def wood_images(n: int, size: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(np.stack([wood_texture(rng, size) for _ in range(n)]), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def fitted() -> Padim:
    return Padim(**SMALL).fit(wood_images(12, 64, 0), seed=0, progress=False)


def save_load(state: dict, tmp_path) -> dict:
    path = tmp_path / "padim.pt"
    torch.save(state, path)
    return torch.load(path, weights_only=True)


def test_shapes_and_state(fitted: Padim):
    images = wood_images(3, 64, 5)
    scores, maps = fitted.score(images)
    assert scores.shape == (3,) and scores.dtype == np.float32
    assert maps.shape == (3, 64, 64) and maps.dtype == np.float32
    np.testing.assert_allclose(scores, maps.reshape(3, -1).max(1), rtol=1e-6)
    # all of blocks.0/1/2 = 80 channels, 40 drawn; 16x16 grid at stride 4
    assert fitted.mean.shape == (256, 40) and fitted.inv_cov.shape == (256, 40, 40)
    assert fitted.state_bytes() == 256 * 40 * 4 + 256 * 40 * 40 * 4 + 40 * 8
    # the stored inverse really is the inverse of a positive-definite covariance
    eig = torch.linalg.eigvalsh(fitted.inv_cov.double())
    assert bool((eig > 0).all())


def test_other_input_size_gives_maps_at_that_size(fitted: Padim):
    scores, maps = fitted.score(wood_images(2, 96, 6))
    assert maps.shape == (2, 96, 96) and scores.shape == (2,)


def test_round_trip_scores_identically_and_keeps_channels(fitted: Padim, tmp_path):
    images = wood_images(4, 64, 7)
    before = fitted.score(images)
    state = save_load(fitted.to_artifacts()["state"], tmp_path)
    reloaded = Padim.from_artifacts(state=state, device="cpu")
    after = reloaded.score(images)
    np.testing.assert_array_equal(before[0], after[0])
    np.testing.assert_array_equal(before[1], after[1])
    assert torch.equal(reloaded.channel_index, fitted.channel_index)
    # the subset is a stored draw, not re-derived: a model whose state says otherwise keeps its own
    state2 = dict(state, channel_index=state["channel_index"].flip(0))
    assert not torch.equal(Padim.from_artifacts(state=state2, device="cpu").channel_index, fitted.channel_index)


def test_channel_subset_depends_on_seed_and_is_repeatable():
    train = wood_images(6, 64, 0)
    a = Padim(**SMALL).fit(train, seed=0, progress=False).channel_index
    b = Padim(**SMALL).fit(train, seed=0, progress=False).channel_index
    c = Padim(**SMALL).fit(train, seed=1, progress=False).channel_index
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert len(torch.unique(a)) == 40 and int(a.max()) < 80


def test_dark_knot_scores_above_good_wood_and_is_localised(fitted: Padim):
    good = wood_images(4, 64, 2)
    knot = good[:1].copy()
    yy, xx = np.mgrid[:64, :64]
    knot[0][(yy - 40) ** 2 + (xx - 20) ** 2 <= 25] = (40, 25, 10)
    scores, maps = fitted.score(np.concatenate([good, knot]))
    assert scores[-1] > scores[:-1].max()
    peak = np.unravel_index(np.argmax(maps[-1]), maps[-1].shape)
    assert abs(peak[0] - 40) <= 8 and abs(peak[1] - 20) <= 8


def test_gaussian_blur_keeps_mass_and_smooths():
    x = torch.zeros(1, 33, 33)
    x[0, 16, 16] = 1.0
    y = gaussian_blur_maps(x, 2.0)
    assert abs(float(y.sum()) - 1.0) < 1e-4 and float(y.max()) < 0.1
    assert int(y[0].argmax()) == 16 * 33 + 16


def test_bad_config_and_unfitted_errors():
    with pytest.raises(ValueError, match="unknown config"):
        Padim(n_channels=10)
    with pytest.raises(RuntimeError, match="fit"):
        Padim().score(wood_images(1, 64, 0))
    with pytest.raises(ValueError, match="not a PaDiM state"):
        Padim.from_artifacts(state={"model": "patchcore"})


@pytest.mark.real_data
def test_real_data_auroc_floor(real_data):
    from wood_anomaly.data.layout import prepare_dataset, select

    _, arrays = prepare_dataset(real_data, image_size=256, val_fraction=0.1, seed=0, progress=False)
    train, test = select(arrays, "train"), select(arrays, "test")
    model = Padim().fit(train["images"], seed=0, progress=False)
    scores, maps = model.score(test["images"])
    assert roc_auc_score(test["label"], scores) >= 0.90  # measured 0.955 (seed 0)
    assert roc_auc_score(test["masks"].ravel(), maps.ravel()) >= 0.93  # measured 0.961


def test_ledoit_wolf_from_streamed_sums_equals_sklearn() -> None:
    """The streamed estimate (sums about a shift, as Padim.fit keeps them) = sklearn.covariance.ledoit_wolf."""
    from sklearn.covariance import ledoit_wolf

    from wood_anomaly.models.padim.model import ledoit_wolf_from_sums

    rng = np.random.default_rng(0)
    for n, d in ((20, 8), (63, 64), (200, 5)):  # fewer samples than dims, about equal, many more
        samples = [rng.standard_normal((n, d)) @ rng.standard_normal((d, d)) * 0.3 + rng.uniform(-2, 2, d) for _ in range(3)]
        shift = samples[0][:4].mean(0)  # like Padim: the first batch's mean, not the true mean
        x = np.stack([s - shift for s in samples])  # [P, n, D]
        mean = x.mean(1)
        cov = np.stack([np.cov(xi, rowvar=False) for xi in x])
        sq = (x**2).sum(-1)
        shrunk, alpha = ledoit_wolf_from_sums(
            torch.from_numpy(cov), torch.from_numpy(mean), torch.from_numpy((sq[..., None] * x).sum(1)),
            torch.from_numpy((sq**2).sum(1)), n,
        )
        for i, s in enumerate(samples):
            ref_cov, ref_alpha = ledoit_wolf(s)
            assert float(alpha[i]) == pytest.approx(ref_alpha, rel=1e-6, abs=1e-9)
            np.testing.assert_allclose(shrunk[i].numpy(), ref_cov, rtol=1e-6, atol=1e-9)
    assert 0 < float(alpha.min()) and float(alpha.max()) <= 1


def test_padim_ledoit_wolf_fit_scores_and_round_trips() -> None:
    rng = np.random.default_rng(1)
    train = rng.integers(90, 160, (8, 64, 64, 3), dtype=np.uint8)
    test = rng.integers(90, 160, (3, 64, 64, 3), dtype=np.uint8)
    test[1, 20:30, 20:30] = 10
    common = dict(image_size=64, n_features=20, epsilon=0.01)
    lw = Padim(covariance="ledoit_wolf", **common).fit(train, seed=0, device="cpu", progress=False)
    plain = Padim(**common).fit(train, seed=0, device="cpu", progress=False)
    assert 0 < lw.shrinkage <= 1 and plain.shrinkage == 0
    s_lw, _ = lw.score(test)
    assert s_lw[1] > np.delete(s_lw, 1).max()
    assert not np.allclose(s_lw, plain.score(test)[0])  # a different estimator, not a renamed one
    again = Padim.from_artifacts(**lw.to_artifacts(), device="cpu")
    np.testing.assert_allclose(again.score(test)[0], s_lw, rtol=1e-5)
    with pytest.raises(ValueError, match="covariance must be"):
        Padim(covariance="oas")


def test_precomputed_training_embeddings_give_the_same_gaussians():
    """fit(images[rows], precomputed=training_embeddings(images)[rows]) equals fit(images[rows]) bit for bit, with
    flips, a photometric copy, Ledoit-Wolf and a seeded channel subset (what the k-fold threshold fits reuse);
    embeddings that do not match the images are an error, not a silent misfit."""
    from wood_anomaly.evaluation.thresholds import out_of_fold_scores

    config = {**SMALL, "train_flips": ["none", "h"], "train_photometric": [[1.1, 1.0]], "covariance": "ledoit_wolf"}
    images = wood_images(10, 64, 3)
    emb = Padim(**config).training_embeddings(images, device="cpu")
    assert emb.shape == (10, 3, 256, 80)  # 10 boards x (2 flips + 1 re-lit) x 16x16 grid x all 80 channels
    rows = np.array([0, 2, 3, 5, 6, 7, 9])
    plain = Padim(**config).fit(images[rows], seed=4, progress=False)
    reused = Padim(**config).fit(images[rows], seed=4, progress=False, precomputed=emb[rows])
    assert torch.equal(plain.channel_index, reused.channel_index)
    assert torch.equal(plain.mean, reused.mean) and torch.equal(plain.inv_cov, reused.inv_cov)
    assert plain.shrinkage == reused.shrinkage
    with pytest.raises(ValueError, match="precomputed embeddings"):
        Padim(**config).fit(images[rows], seed=4, progress=False, precomputed=emb[:5])

    # the k-fold scores use the reuse and match fold fits made from scratch
    oof = out_of_fold_scores(lambda: Padim(**config), images, n_folds=3, seed=0,
                             fit_kwargs={"seed": 4, "device": "cpu", "progress": False})
    assert oof.precomputed is not None and torch.equal(oof.precomputed, emb)
    for j in range(3):
        held_out = oof.folds == j
        scratch = Padim(**config).fit(images[~held_out], seed=4, progress=False)
        np.testing.assert_array_equal(oof.scores[held_out], scratch.score(images[held_out])[0].astype(np.float64))
