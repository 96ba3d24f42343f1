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


def plain_model_class(name: str) -> type:
    """The single model: the registry's class is its two-member fold ensemble, whose members are these."""
    from wood_anomaly.models.registry import MODELS

    return MODELS[name].load_class().member_class()


@pytest.mark.parametrize("name", list(TINY))
def test_one_stream_trains_like_keras_own_pydataset_loop(name, monkeypatch):
    """fit_trainer feeds every epoch from one tf.data stream (ImageFeeder.training_dataset); the weights it
    reaches must be exactly those of Keras' own loop over the PyDataset (a new iterator each epoch), with the
    augmentation and Keras' batch shuffling. Guards the batch order against a Keras upgrade."""
    cls = plain_model_class(name)
    train = boards(9, 3)
    augmentation = {"enabled": True, "hflip": 0.5, "vflip": 0.5, "brightness": 0.1}

    def fitted_weights() -> list[np.ndarray]:
        model = cls(image_size=32, epochs=3, batch_size=4, augmentation=augmentation, **TINY[name])
        model.fit(train, seed=5, device="cpu", progress=False)
        return [w for net in model.networks.values() for w in net.get_weights()]

    stream = fitted_weights()

    def keras_loop(trainer, train_feed, val_feed, *, epochs, extra_callbacks=None, **_):
        hist = trainer.fit(train_feed, epochs=epochs, callbacks=list(extra_callbacks or []), verbose=0)
        return hist.history

    monkeypatch.setattr("wood_anomaly.models.keras.base.fit_trainer", keras_loop)
    reference = fitted_weights()
    assert len(stream) == len(reference) > 0
    for got, expected in zip(stream, reference):
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("name", list(TINY))
def test_train_step_is_traced_once(name, monkeypatch):
    """The optimizer's slots exist before fit, so tf.function traces the train step once, not twice."""
    cls = plain_model_class(name)
    traces = []
    make_trainer = cls.make_trainer

    def counting_make_trainer(self):
        trainer, callbacks = make_trainer(self)
        step = trainer.train_step

        def counted(data):
            traces.append(1)
            return step(data)

        trainer.train_step = counted
        return trainer, callbacks

    monkeypatch.setattr(cls, "make_trainer", counting_make_trainer)
    model = cls(image_size=32, epochs=2, batch_size=4, **TINY[name])
    model.fit(boards(9, 4), seed=1, device="cpu", progress=False)
    assert len(model.history["loss"]) == 2
    assert len(traces) == 1


@pytest.mark.parametrize("name", list(TINY))
def test_traced_inference_equals_the_eager_call(name):
    """Scoring runs each network as a traced graph (KerasReconstructionModel.infer): bit for bit the eager
    Keras call, for any batch size."""
    import tensorflow as tf

    cls = plain_model_class(name)
    model = cls(image_size=32, epochs=1, batch_size=4, **TINY[name])
    model.fit(boards(8, 6), seed=2, device="cpu", progress=False)
    for network, net in model.networks.items():
        for n in (1, 3, 5):
            shape = (n, *net.inputs[0].shape[1:])
            x = tf.random.stateless_uniform(shape, seed=(n, 7))
            traced, eager = tf.nest.flatten(model.infer(network, x)), tf.nest.flatten(net(x, training=False))
            assert len(traced) == len(eager) == len(net.outputs)
            # the VAE encoder's outputs are [z_mean, z_log_var, z]: z is a fresh random draw on every call
            random_outputs = {2} if (name, network) == ("vae", "encoder") else set()
            for i in sorted(set(range(len(eager))) - random_outputs):
                np.testing.assert_array_equal(np.asarray(traced[i]), np.asarray(eager[i]))
    assert set(model._inference_graphs) == set(model.networks)
