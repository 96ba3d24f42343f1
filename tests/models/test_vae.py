"""VAE (Keras): the ELBO falls, beta weighs the KL term, the Sampling layer reloads from .h5, real-data floor."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from kedro_datasets.tensorflow import TensorFlowModelDataset
from sklearn.metrics import roc_auc_score

from wood_anomaly.data.layout import prepare_dataset, select
from wood_anomaly.data.synthetic import wood_texture
from wood_anomaly.models.keras import CUSTOM_OBJECTS
from wood_anomaly.models.vae import VAE, Sampling

SMALL = {"image_size": 32, "filters": [8, 8, 16, 16], "latent_dim": 8, "batch_size": 4}


def wood_images(n: int, size: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(np.stack([wood_texture(rng, size) for _ in range(n)]), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def vae() -> VAE:
    model = VAE(**SMALL, epochs=6, learning_rate=2e-3, patience=0, lr_patience=0)
    return model.fit(wood_images(12, 32, 0), wood_images(3, 32, 1), seed=0, progress=False)


def test_elbo_decreases_and_reports_its_terms(vae):
    h = vae.history
    for key in ("loss", "reconstruction", "kl", "val_loss", "val_reconstruction", "val_kl"):
        assert len(h[key]) == 6, key
    assert h["reconstruction"][-1] < 0.7 * h["reconstruction"][0]
    assert h["loss"][-1] < h["loss"][0]
    np.testing.assert_allclose(h["loss"], np.add(h["reconstruction"], h["kl"]), rtol=1e-4)  # beta = 1


def test_beta_zero_drops_the_kl_term():
    model = VAE(**SMALL, epochs=1, beta=0.0).fit(wood_images(6, 32, 0), seed=0, progress=False)
    np.testing.assert_allclose(model.history["loss"], model.history["reconstruction"], rtol=1e-6)
    assert model.history["kl"][0] > 0


def test_sampling_layer_reloads_from_h5(vae, tmp_path):
    x = vae.to_input(wood_images(3, 32, 5))
    encoder = vae.to_artifacts()["encoder"]
    ds = TensorFlowModelDataset(
        filepath=str(tmp_path / "encoder.h5"), save_args={"save_format": "h5", "include_optimizer": False},
        load_args={"compile": False},
    )
    ds.save(encoder)
    loaded = ds.load()
    assert isinstance(loaded.get_layer("sampling"), Sampling)
    z_mean, z_log_var, z = (np.asarray(t) for t in loaded(x, training=False))
    ref_mean, ref_log_var, _ = (np.asarray(t) for t in encoder(x, training=False))
    assert np.array_equal(z_mean, ref_mean) and np.array_equal(z_log_var, ref_log_var)
    assert z.shape == z_mean.shape and not np.allclose(z, z_mean)  # it still samples
    # also loadable with explicit custom_objects (load_args: {custom_objects: ...}) in safe mode
    direct = keras.models.load_model(next(tmp_path.glob("encoder.h5*")), custom_objects=CUSTOM_OBJECTS, compile=False, safe_mode=True)
    assert isinstance(direct.get_layer("sampling"), Sampling)


@pytest.mark.real_data
@pytest.mark.slow
def test_real_data_auroc_floor(real_data):
    _, arrays = prepare_dataset(real_data, image_size=64, val_fraction=0.1, seed=0, progress=False)
    train, val, test = (select(arrays, s) for s in ("train", "val", "test"))
    model = VAE(image_size=64, epochs=25)
    model.fit(train["images"], val["images"], seed=0, progress=False)
    scores, _ = model.score(test["images"])
    assert roc_auc_score(test["label"], scores) >= 0.75


def test_log_var_clip_bounds_the_variance_and_reloads_from_h5(tmp_path):
    model = VAE(**SMALL, epochs=1, log_var_clip=1.5).fit(wood_images(6, 32, 0), seed=0, progress=False)
    encoder = model.to_artifacts()["encoder"]
    dense = encoder.get_layer("z_log_var")
    kernel, bias = dense.get_weights()
    dense.set_weights([kernel * 1e4, bias + 50.0])  # an untrained encoder's worst case: huge log-variances
    x = model.to_input(wood_images(3, 32, 5))
    _, z_log_var, _ = (np.asarray(t) for t in encoder(x, training=False))
    assert np.abs(z_log_var).max() <= 1.5 and np.abs(z_log_var).max() > 1.4
    ds = TensorFlowModelDataset(
        filepath=str(tmp_path / "encoder.h5"), save_args={"save_format": "h5", "include_optimizer": False},
        load_args={"compile": False},
    )
    ds.save(encoder)
    loaded = ds.load()
    assert loaded.get_layer("z_log_var_bounded").limit == 1.5
    np.testing.assert_array_equal(np.asarray(loaded(x, training=False)[1]), z_log_var)
    unclipped = VAE(**SMALL, epochs=1).fit(wood_images(6, 32, 0), seed=0, progress=False).to_artifacts()["encoder"]
    assert "z_log_var_bounded" not in [layer.name for layer in unclipped.layers]  # off by default
