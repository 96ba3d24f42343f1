"""PatchCore: contract shapes, detects a toy defect, exact save/load round trip, real-data floor."""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np
import pytest
import torch

from wood_anomaly.models.base import AnomalyModel
from wood_anomaly.models.maps import gaussian_blur_maps
from wood_anomaly.models.patchcore import PatchCore

SIZE = 64
FAST = {"coreset_ratio": 0.25, "train_flips": ["none", "h"], "batch_size": 8}


def _wood(n: int, seed: int) -> np.ndarray:
    """Toy 'wood': noisy horizontal grain with a random phase, uint8 [n, 64, 64, 3]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    out = []
    for _ in range(n):
        phase = rng.uniform(0, 2 * np.pi)
        grain = 0.5 + 0.25 * np.sin(yy * 0.6 + 0.15 * np.sin(xx * 0.1) + phase)
        img = grain[..., None] * np.array([200, 150, 100], np.float32) + rng.normal(0, 6, (SIZE, SIZE, 3))
        out.append(np.clip(img, 0, 255).astype(np.uint8))
    return np.stack(out)


def _with_knot(images: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    imgs = images.copy()
    masks = np.zeros(images.shape[:3], np.uint8)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    for i in range(len(imgs)):
        cy, cx = rng.integers(16, SIZE - 16, 2)
        m = (yy - cy) ** 2 + (xx - cx) ** 2 <= 36
        imgs[i][m] = (40, 25, 15)
        masks[i][m] = 1
    return imgs, masks


@pytest.fixture(scope="module")
def fitted() -> PatchCore:
    return PatchCore(**FAST).fit(_wood(10, 0), seed=0, device="cpu", progress=False)


def test_contract_and_shapes(fitted: PatchCore) -> None:
    assert isinstance(fitted, AnomalyModel)
    assert fitted.history == {}
    imgs = _wood(3, 1)
    scores, maps = fitted.score(imgs, batch_size=2)
    assert scores.shape == (3,) and scores.dtype == np.float32
    assert maps.shape == (3, SIZE, SIZE) and maps.dtype == np.float32
    info = fitted.fit_info
    assert info["n_patches"] == 10 * 2 * 16 * 16  # 2 flips, stride-4 grid of a 64 px image
    assert info["bank_size"] == int(np.ceil(0.25 * info["n_patches"]))
    assert info["feature_dim"] == 24 + 40


def test_defect_scores_higher_and_is_localised(fitted: PatchCore) -> None:
    good = _wood(6, 2)
    bad, masks = _with_knot(_wood(6, 3), seed=4)
    s_good, _ = fitted.score(good)
    s_bad, maps = fitted.score(bad)
    assert s_bad.min() > s_good.max()
    for amap, mask in zip(maps, masks):
        assert amap[mask == 1].mean() > 2 * amap[mask == 0].mean()


def test_artifacts_round_trip_scores_identically(fitted: PatchCore, tmp_path: Path) -> None:
    art = fitted.to_artifacts()
    assert set(art) == {"memory_bank", "state"}
    assert isinstance(art["memory_bank"], faiss.Index)
    faiss.write_index(art["memory_bank"], str(tmp_path / "bank.faiss"))
    torch.save(art["state"], tmp_path / "state.pt")
    state = torch.load(tmp_path / "state.pt", weights_only=True)  # plain types only
    for key in ("backbone", "layers", "coreset_ratio", "map_sigma", "num_neighbors", "score_aggregation"):
        assert state["config"][key] == fitted.config[key]
    again = PatchCore.from_artifacts(memory_bank=faiss.read_index(str(tmp_path / "bank.faiss")), state=state)
    imgs = _with_knot(_wood(3, 5), seed=6)[0]
    s1, m1 = fitted.score(imgs)
    s2, m2 = again.score(imgs)
    np.testing.assert_array_equal(s1, s2)
    np.testing.assert_array_equal(m1, m2)
    with pytest.raises(ValueError, match="different runs"):
        bad_state = {**state, "bank_size": state["bank_size"] + 1}
        PatchCore.from_artifacts(memory_bank=art["memory_bank"], state=bad_state)


def test_scoring_options_change_scores_consistently() -> None:
    train = _wood(6, 7)
    test = _with_knot(_wood(2, 8), seed=9)[0]
    base = PatchCore(coreset_ratio=1.0, score_aggregation="max", score_sigma=0.0, num_neighbors=1).fit(train, progress=False)
    s_max, maps = base.score(test)
    # the map is an interpolated + blurred version of the patch grid: never above the grid's max
    assert np.all(maps.max(axis=(1, 2)) <= s_max * (1 + 1e-5)) and np.all(maps.max(axis=(1, 2)) > 0.3 * s_max)
    topk = PatchCore.from_artifacts(**{**base.to_artifacts(), "state": {**base.to_artifacts()["state"],
                                   "config": {**base.config, "score_aggregation": "topk_mean", "score_topk": 5}}})
    s_top, _ = topk.score(test)
    assert np.all(s_top <= s_max + 1e-6) and np.all(s_top > 0)
    rew = PatchCore.from_artifacts(**{**base.to_artifacts(), "state": {**base.to_artifacts()["state"],
                                 "config": {**base.config, "num_neighbors": 9}}})
    s_rew, _ = rew.score(test)
    assert np.all(s_rew < s_max) and np.all(s_rew > 0)  # weight 1 - softmax in (0, 1)



def test_patch_neighbors_average_over_the_nearest_bank_patches() -> None:
    train = _wood(4, 3)
    one = PatchCore(coreset_ratio=1.0, score_aggregation="max", score_sigma=0.0, patch_neighbors=1).fit(train, progress=False)
    five = PatchCore.from_artifacts(**{**one.to_artifacts(), "state": {**one.to_artifacts()["state"],
                                  "config": {**one.config, "patch_neighbors": 5}}})
    # the whole training set is the bank: with 1 neighbour each training patch finds itself (distance ~0),
    # the mean over 5 neighbours does not
    s1, _ = one.score(train)
    s5, _ = five.score(train)
    assert np.all(s1 < 1e-3) and np.all(s5 > 10 * np.maximum(s1, 1e-6))
    test = _with_knot(_wood(2, 8), seed=9)[0]
    assert np.all(five.score(test)[0] >= one.score(test)[0] - 1e-6)  # a mean of the k nearest >= the nearest


def test_feature_stride_sets_the_patch_grid_and_still_finds_the_knot() -> None:
    """feature_stride 8 puts every layer (blocks.1 at stride 4 too) on an input/8 grid: 4x fewer patches,
    maps still at the input size, the knot still found."""
    fine = PatchCore(**FAST).fit(_wood(6, 0), seed=0, device="cpu", progress=False)
    coarse = PatchCore(**{**FAST, "feature_stride": 8}).fit(_wood(6, 0), seed=0, device="cpu", progress=False)
    assert tuple(fine.embed(_wood(1, 1)).shape[-2:]) == (SIZE // 4, SIZE // 4)
    assert tuple(coarse.embed(_wood(1, 1)).shape[-2:]) == (SIZE // 8, SIZE // 8)
    assert coarse.fit_info["n_patches"] * 4 == fine.fit_info["n_patches"]
    bad, masks = _with_knot(_wood(4, 3), seed=4)
    s_good, _ = coarse.score(_wood(4, 2))
    s_bad, maps = coarse.score(bad)
    assert maps.shape == (4, SIZE, SIZE)
    assert s_bad.min() > s_good.max()
    for amap, mask in zip(maps, masks):
        assert amap[mask == 1].mean() > 1.5 * amap[mask == 0].mean()


def test_bad_config_and_unfitted_are_errors() -> None:
    with pytest.raises(ValueError, match="unknown config"):
        PatchCore(coreset=0.1)
    with pytest.raises(ValueError, match="train_flips"):
        PatchCore(train_flips=["diagonal"])
    with pytest.raises(RuntimeError, match="fit"):
        PatchCore().score(_wood(1, 0))


def test_gaussian_blur_keeps_mass_and_shape() -> None:
    m = torch.zeros(2, 33, 40)
    m[:, 16, 20] = 1.0
    b = gaussian_blur_maps(m, 2.0)
    assert b.shape == m.shape
    assert abs(float(b[0].sum()) - 1.0) < 1e-4 and float(b[0].max()) < 0.1
    assert torch.equal(gaussian_blur_maps(m, 0.0), m)


@pytest.mark.real_data
def test_real_data_image_auroc_floor(real_data) -> None:
    root = real_data
    from sklearn.metrics import roc_auc_score

    from wood_anomaly.data.layout import prepare_dataset

    _, a = prepare_dataset(root, 256, 0.1, 0, progress=False)
    train = a["images"][a["split"] == "train"]
    test = a["images"][a["split"] == "test"]
    labels = a["label"][a["split"] == "test"]
    model = PatchCore().fit(train, seed=0, device="cpu", progress=False)  # the shipped defaults
    scores, _ = model.score(test)
    auroc = roc_auc_score(labels, scores)
    assert auroc > 0.93, f"image AUROC {auroc:.3f} on the real wood test set"


def test_precomputed_embeddings_give_the_same_model_and_out_of_fold_scores() -> None:
    """k-fold threshold fits reuse one pass through the backbone: same bank, same scores as fitting from images."""
    from wood_anomaly.evaluation.thresholds import out_of_fold_scores

    images, test = _wood(9, 3), _wood(3, 4)
    config = {**FAST, "batch_size": 4}
    plain = PatchCore(**config).fit(images, seed=0, device="cpu", progress=False)
    emb = PatchCore(**config).training_embeddings(images, device="cpu")
    assert emb.shape[:2] == (9, 2 * 16 * 16)  # 2 copies (none, h) of a 16 x 16 patch grid per image
    before = emb.clone()
    reused = PatchCore(**config).fit(images, seed=0, device="cpu", progress=False, precomputed=emb)
    assert torch.equal(emb, before)  # the caller's embeddings are not scaled in place
    np.testing.assert_array_equal(reused.memory_bank.reconstruct_n(0, reused.memory_bank.ntotal),
                                  plain.memory_bank.reconstruct_n(0, plain.memory_bank.ntotal))
    np.testing.assert_array_equal(reused.score(test)[0], plain.score(test)[0])
    with pytest.raises(ValueError, match="do not match 8 training images"):
        PatchCore(**config).fit(images[:8], seed=0, device="cpu", progress=False, precomputed=emb)

    oof = out_of_fold_scores(lambda: PatchCore(**config), images, n_folds=3, seed=0,
                             fit_kwargs={"seed": 0, "device": "cpu", "progress": False})
    assert oof.precomputed is not None and oof.precomputed.shape == emb.shape
    for j in range(3):  # each board scored by a model fitted from the other folds' images, as without the reuse
        held = oof.folds == j
        fold_model = PatchCore(**config).fit(images[~held], seed=0, device="cpu", progress=False)
        np.testing.assert_allclose(oof.scores[held], fold_model.score(images[held])[0], rtol=1e-5)
