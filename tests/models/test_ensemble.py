"""Cross-fitted fold ensemble: every training board scored by the member that never saw it; artifacts round-trip."""

from __future__ import annotations

import numpy as np
import pytest

from wood_anomaly.models.ensemble import FoldEnsemble


class _Member:
    """Tiny AnomalyModel: score = |image mean - training mean|; map = constant score."""

    def __init__(self, **params):
        self.params = params
        self.history = {"loss": [1.0]}

    def fit(self, train_images, val_images=None, *, seed=0, **kwargs):
        self.mu = float(np.asarray(train_images, dtype=np.float64).mean())
        self.n_val = None if val_images is None else len(val_images)
        return self

    def score(self, images, *, batch_size=16):
        s = np.abs(np.asarray(images, dtype=np.float64).reshape(len(images), -1).mean(1) - self.mu)
        return s, np.broadcast_to(s[:, None, None], (len(images), 4, 4)).astype(np.float32)

    def to_artifacts(self):
        return {"state": {"mu": self.mu}}

    @classmethod
    def from_artifacts(cls, state):
        model = cls()
        model.mu = state["mu"]
        return model


class _Folds(FoldEnsemble):
    name = "tiny"

    @classmethod
    def member_class(cls):
        return _Member


def test_fold_ensemble_out_of_fold_scores_and_mean_score():
    rng = np.random.default_rng(0)
    train = rng.integers(0, 255, size=(9, 16, 16, 3)).astype(np.uint8)
    val = rng.integers(0, 255, size=(3, 16, 16, 3)).astype(np.uint8)
    model = _Folds().fit(train, val, seed=0)
    images = np.concatenate([train, val])
    assert model.threshold_scores.shape == (12,) and np.isfinite(model.threshold_scores).all()
    assert model.validation_defect_scores.shape == (12,) and np.isfinite(model.validation_defect_scores).all()
    for i in range(12):  # scored by the member fitted without board i
        member = model.members[model.folds[i]]
        others = images[model.folds != model.folds[i]].astype(np.float64)
        assert member.mu == pytest.approx(others.mean())
        assert model.threshold_scores[i] == pytest.approx(abs(images[i].astype(np.float64).mean() - member.mu))
    scores, maps = model.score(images[:2])
    expected = np.mean([m.score(images[:2])[0] for m in model.members], axis=0)
    np.testing.assert_allclose(scores, expected)
    assert maps.shape == (2, 4, 4)
    artifacts = model.to_artifacts()
    assert set(artifacts) == {"state_fold0", "state_fold1"}
    reloaded = _Folds.from_artifacts(**artifacts)
    np.testing.assert_allclose(reloaded.score(images[:2])[0], scores)
    with pytest.raises(ValueError, match="fold 1"):
        _Folds.from_artifacts(state_fold0=artifacts["state_fold0"])
