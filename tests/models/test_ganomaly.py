"""GANomaly (Keras): generator and discriminator both train, loss weights and latent score term work, real-data floor."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from wood_anomaly.data.layout import prepare_dataset, select
from wood_anomaly.data.synthetic import wood_texture
from wood_anomaly.models.ganomaly import GANomaly

SMALL = {"image_size": 32, "base_filters": 8, "latent_dim": 16, "batch_size": 4}


def wood_images(n: int, size: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(np.stack([wood_texture(rng, size) for _ in range(n)]), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def gan() -> GANomaly:
    model = GANomaly(**SMALL, epochs=6, learning_rate=2e-3, patience=0, lr_patience=0, latent_weight=1.0)
    return model.fit(wood_images(12, 32, 0), wood_images(3, 32, 1), seed=0, progress=False)


def test_losses_are_logged_and_reconstruction_improves(gan):
    h = gan.history
    for key in ("loss", "adversarial", "contextual", "latent", "d_loss", "val_contextual"):
        assert len(h[key]) == 6, key
    assert h["contextual"][-1] < 0.7 * h["contextual"][0]
    # generator total = 1 * adversarial + 50 * contextual + 1 * latent (epoch means of the same steps)
    np.testing.assert_allclose(h["loss"], np.add(np.add(h["adversarial"], 50 * np.asarray(h["contextual"])), h["latent"]), rtol=1e-4)
    assert np.isfinite(h["d_loss"]).all() and h["d_loss"][-1] < h["d_loss"][0]


def test_latent_distance_term_adds_to_the_score(gan):
    images = wood_images(4, 32, 3)
    with_latent, maps1 = gan.score(images)
    plain = GANomaly.from_artifacts(**gan.to_artifacts())
    plain.config["latent_weight"] = 0.0
    without, maps0 = plain.score(images)
    assert np.array_equal(maps0, maps1)  # the map is the reconstruction error only
    _, extra = gan.reconstruct(gan.to_input(images))
    np.testing.assert_allclose(with_latent - without, extra / gan.fitted["extra_norm"], rtol=1e-4, atol=1e-6)


def test_bce_adversarial_and_mse_contextual_options_train():
    model = GANomaly(**SMALL, epochs=2, adversarial_loss="bce", contextual_loss="mse")
    model.fit(wood_images(6, 32, 0), seed=0, progress=False)
    assert np.isfinite(model.history["adversarial"]).all()
    with pytest.raises(ValueError, match="adversarial_loss"):
        GANomaly(**SMALL, epochs=1, adversarial_loss="wasserstein").fit(wood_images(4, 32, 0), progress=False)


@pytest.mark.real_data
@pytest.mark.slow
def test_real_data_auroc_floor(real_data):
    _, arrays = prepare_dataset(real_data, image_size=64, val_fraction=0.1, seed=0, progress=False)
    train, val, test = (select(arrays, s) for s in ("train", "val", "test"))
    model = GANomaly(image_size=64, epochs=25)
    model.fit(train["images"], val["images"], seed=0, progress=False)
    scores, _ = model.score(test["images"])
    assert roc_auc_score(test["label"], scores) >= 0.75
