"""Same config, same seed -> the same scores: AutoEncoder, VAE and GANomaly fitted twice in one process."""

from __future__ import annotations

import numpy as np
import pytest

from wood_anomaly.data.synthetic import wood_texture

TINY = {
    "autoencoder": {"filters": [8, 8, 16]},
    "vae": {"filters": [8, 8, 16, 16], "latent_dim": 8},
    "ganomaly": {"base_filters": 8, "latent_dim": 8},
}


def boards(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(np.stack([wood_texture(rng, 48) for _ in range(n)]), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("name", list(TINY))
def test_one_seed_gives_identical_scores(name):
    from wood_anomaly.models.registry import MODELS

    cls = MODELS[name].load_class()
    train, val = boards(8, 0), boards(3, 1)
    test = boards(4, 2)
    test[2:, 16:28, 16:28] = 30  # two boards with a dark patch

    def fit_and_score(seed: int) -> np.ndarray:
        model = cls(image_size=32, epochs=2, batch_size=4, **TINY[name])
        model.fit(train, val, seed=seed, device="cpu", progress=False)
        scores, maps = model.score(test)
        return np.concatenate([scores, maps.ravel()])

    first, second = fit_and_score(7), fit_and_score(7)
    np.testing.assert_array_equal(first, second)
