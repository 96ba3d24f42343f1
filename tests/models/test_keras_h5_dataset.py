"""Keras models (AutoEncoder, VAE, GANomaly): artifacts saved as .h5 through kedro-datasets'
TensorFlowModelDataset (the catalog's settings) and loaded back score exactly like the model in memory;
the scoring config carried inside the .h5 survives; shapes and dtypes follow the AnomalyModel contract."""

from __future__ import annotations

import numpy as np
import pytest
from kedro.io.core import Version
from kedro_datasets.tensorflow import TensorFlowModelDataset

from wood_anomaly.data.synthetic import wood_texture
from wood_anomaly.models.autoencoder import AutoEncoder
from wood_anomaly.models.ganomaly import GANomaly
from wood_anomaly.models.vae import VAE

# The catalog entry for each artifact uses exactly these arguments.
SAVE_ARGS = {"save_format": "h5", "include_optimizer": False}
LOAD_ARGS = {"compile": False}

CASES = {
    "autoencoder": (AutoEncoder, {"grayscale": True, "map_kind": "mse+ssim", "aggregation": "topk", "filters": [8, 16, 16]}),
    "vae": (VAE, {"map_kind": "ssim", "latent_dim": 16, "filters": [8, 8, 16, 16]}),
    "ganomaly": (GANomaly, {"map_kind": "mse+grad", "latent_weight": 0.5, "base_filters": 8, "latent_dim": 16}),
}


def wood_images(n: int, size: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(np.stack([wood_texture(rng, size) for _ in range(n)]), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module", params=sorted(CASES))
def fitted(request):
    cls, params = CASES[request.param]
    train = wood_images(10, 40, seed=1)
    val = wood_images(3, 40, seed=2)
    model = cls(image_size=32, epochs=2, batch_size=4, **params).fit(train, val, seed=0, progress=False)
    return model, wood_images(5, 40, seed=3)


def test_score_contract(fitted):
    model, images = fitted
    scores, maps = model.score(images, batch_size=2)
    assert scores.dtype == np.float32 and scores.shape == (5,)
    assert maps.dtype == np.float32 and maps.shape == (5, 40, 40)  # input resolution, not model size
    assert np.isfinite(scores).all() and np.isfinite(maps).all()
    assert (maps >= 0).all()
    # batching does not change the result
    s_all, m_all = model.score(images, batch_size=16)
    np.testing.assert_allclose(s_all, scores, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(m_all, maps, rtol=1e-5, atol=1e-6)
    # history: per-epoch training and validation losses
    assert len(model.history["loss"]) == 2 and len(model.history["val_loss"]) == 2


def test_in_memory_round_trip_is_exact(fitted):
    model, images = fitted
    reloaded = type(model).from_artifacts(**model.to_artifacts())
    for a, b in zip(model.score(images), reloaded.score(images)):
        assert np.array_equal(a, b)


def test_h5_round_trip_through_tensorflow_model_dataset(fitted, tmp_path):
    model, images = fitted
    artifacts = model.to_artifacts()
    assert set(artifacts) == set(type(model).artifact_names)
    loaded = {}
    for key, net in artifacts.items():
        ds = TensorFlowModelDataset(
            filepath=str(tmp_path / f"{key}.h5"), save_args=SAVE_ARGS, load_args=LOAD_ARGS, version=Version(None, None)
        )
        ds.save(net)
        assert list(tmp_path.glob(f"{key}.h5/*/{key}.h5")), "versioned save writes <file>/<timestamp>/<file>"
        loaded[key] = ds.load()
        assert loaded[key] is not net
    reloaded = type(model).from_artifacts(**loaded)
    assert reloaded.config == model.config  # params (incl. map kind, aggregation, size) came back from the .h5
    assert reloaded.fitted == model.fitted  # JSON keeps floats exactly
    s0, m0 = model.score(images)
    s1, m1 = reloaded.score(images)
    assert np.array_equal(s0, s1) and np.array_equal(m0, m1)


def test_from_artifacts_rejects_wrong_keys_and_foreign_models(fitted):
    model, _ = fitted
    cls = type(model)
    with pytest.raises(ValueError, match="expected"):
        cls.from_artifacts(wrong=object())
    other = AutoEncoder if cls is not AutoEncoder else VAE
    with pytest.raises(ValueError):
        other.from_artifacts(**{k: next(iter(model.to_artifacts().values())) for k in other.artifact_names})


def test_reconstruction_grid_is_an_rgb_image(fitted):
    model, images = fitted
    grid = model.reconstruction_grid(images[:3])
    s = model.config["image_size"]
    assert grid.dtype == np.uint8 and grid.ndim == 3 and grid.shape[2] == 3
    assert grid.shape[0] == 3 * s + 4 and grid.shape[1] == 3 * s + 4  # 3 rows (original/recon/error) x 3 images


def test_unknown_params_and_bad_inputs_are_errors():
    with pytest.raises(ValueError, match="unknown config"):
        AutoEncoder(image_sise=64)
    with pytest.raises(ValueError, match="map_kind"):
        VAE(map_kind="psnr")
    with pytest.raises(ValueError, match="multiple of 16"):
        GANomaly(image_size=40)
    with pytest.raises(ValueError, match="uint8"):
        AutoEncoder(image_size=32, epochs=1).fit(np.zeros((4, 32, 32, 3), np.float32))
    with pytest.raises(RuntimeError, match="fit"):
        AutoEncoder().score(np.zeros((1, 32, 32, 3), np.uint8))


def test_set_scoring_changes_score_only_params_and_survives_reload(fitted):
    model, images = fitted
    copy = type(model).from_artifacts(**model.to_artifacts())
    copy.set_scoring(images[:3], map_kind="ssim", aggregation="topk", topk_fraction=0.05, map_sigma=0.0)
    assert set(copy.fitted["map_norm"]) == {"ssim"}
    s_copy, _ = copy.score(images)
    assert not np.array_equal(s_copy, model.score(images)[0])
    again = type(model).from_artifacts(**copy.to_artifacts())
    assert again.config["map_kind"] == "ssim" and np.array_equal(again.score(images)[0], s_copy)
    with pytest.raises(ValueError, match="score-only"):
        copy.set_scoring(images[:3], image_size=64)
