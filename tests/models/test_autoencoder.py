"""AutoEncoder (Keras): training reduces the loss, a local defect scores above good wood, real-data AUROC floor.
Round trips and the score contract are checked for all Keras models in test_keras_h5_dataset.py."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from wood_anomaly.data.layout import prepare_dataset, select
from wood_anomaly.data.synthetic import wood_texture
from wood_anomaly.models.autoencoder import AutoEncoder


def wood_images(n: int, size: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(np.stack([wood_texture(rng, size) for _ in range(n)]), 0, 255).astype(np.uint8)


def test_training_reduces_train_and_val_loss():
    model = AutoEncoder(image_size=32, epochs=6, batch_size=4, learning_rate=2e-3, patience=0, lr_patience=0)
    model.fit(wood_images(12, 32, 0), wood_images(3, 32, 1), seed=0, progress=False)
    h = model.history
    assert len(h["loss"]) == 6 and len(h["val_loss"]) == 6
    assert h["loss"][-1] < 0.7 * h["loss"][0]
    assert h["val_loss"][-1] < h["val_loss"][0]


def test_dark_knot_scores_above_good_wood_and_is_localised():
    train = wood_images(16, 32, 0)
    model = AutoEncoder(image_size=32, epochs=12, batch_size=8, learning_rate=2e-3, map_sigma=1.0)
    model.fit(train, wood_images(3, 32, 1), seed=0, progress=False)
    good = wood_images(4, 32, 2)
    knot = good[:1].copy()
    yy, xx = np.mgrid[:32, :32]
    disc = (yy - 20) ** 2 + (xx - 10) ** 2 <= 9
    knot[0][disc] = (40, 25, 10)
    scores, maps = model.score(np.concatenate([good, knot]))
    assert scores[-1] > scores[:-1].max()
    peak = np.unravel_index(np.argmax(maps[-1]), maps[-1].shape)
    assert abs(peak[0] - 20) <= 4 and abs(peak[1] - 10) <= 4


def test_grayscale_builds_a_one_channel_model():
    model = AutoEncoder(image_size=32, grayscale=True, epochs=1, batch_size=4)
    model.fit(wood_images(4, 32, 0), seed=0, progress=False)  # no val images: monitors the training loss
    net = model.to_artifacts()["model"]
    assert tuple(net.input_shape) == (None, 32, 32, 1) and tuple(net.output_shape) == (None, 32, 32, 1)
    assert "val_loss" not in model.history


@pytest.mark.real_data
@pytest.mark.slow
def test_real_data_auroc_floor(real_data):
    _, arrays = prepare_dataset(real_data, image_size=64, val_fraction=0.1, seed=0, progress=False)
    train, val, test = (select(arrays, s) for s in ("train", "val", "test"))
    model = AutoEncoder(image_size=64, epochs=25)
    model.fit(train["images"], val["images"], seed=0, progress=False)
    scores, _ = model.score(test["images"])
    assert roc_auc_score(test["label"], scores) >= 0.80  # measured 128 px / 40 epochs: 0.97


def test_mean_photometric_norm_makes_a_relit_board_score_like_the_original():
    """photometric_norm: mean scales every input to the training boards' mean brightness, so a board under
    10% more or less light (no clipping) gives the same score; without it the score moves."""
    train = (wood_images(12, 32, 0) * 0.8).astype(np.uint8)  # headroom: x1.10 does not clip
    boards = (wood_images(3, 32, 2) * 0.8).astype(np.uint8)
    relit = {f: np.clip(np.rint(boards * f), 0, 255).astype(np.uint8) for f in (1.1, 0.9)}
    shifts = {}
    for norm in ("none", "mean"):
        model = AutoEncoder(image_size=32, epochs=4, batch_size=4, photometric_norm=norm)
        model.fit(train, seed=0, progress=False)
        plain, _ = model.score(boards)
        shifts[norm] = max(float(np.max(np.abs(model.score(x)[0] - plain) / plain)) for x in relit.values())
    assert model.config["brightness_reference"] == pytest.approx(np.median(train.reshape(12, -1).mean(1)) / 255)
    assert shifts["mean"] < 0.02  # uint8 rounding of the re-lit boards only
    assert shifts["none"] > 5 * shifts["mean"]
    reloaded = AutoEncoder.from_artifacts(**model.to_artifacts())
    np.testing.assert_allclose(reloaded.score(relit[1.1])[0], model.score(relit[1.1])[0], rtol=1e-5)


def test_unknown_photometric_norm_is_an_error():
    with pytest.raises(ValueError, match="photometric_norm"):
        AutoEncoder(photometric_norm="histogram")
