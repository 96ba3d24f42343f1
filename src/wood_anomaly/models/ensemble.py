"""Cross-fitted fold ensemble: out-of-fold threshold scores for gradient-trained models at no extra fit.

Kedro-free; works for any :class:`~wood_anomaly.models.base.AnomalyModel`. ``fit`` splits the good
training boards into ``n_folds`` folds (seeded ``KFold``), fits member ``j`` on every fold but ``j``
and scores fold ``j`` with it: every board gets one score from a model that never trained on it
(:attr:`threshold_scores`, ``n`` = all good training boards). The deployed model is the ensemble of
the members: image score and anomaly map = the mean of the members' (so no extra fit is needed, and
with 2 folds the members see half the boards each: about the cost of one fit on all of them).

Same distribution? A test board's ensemble score averages two member scores, each distributed like
that member's out-of-fold scores; averaging keeps the mean and shrinks the spread (the members'
errors are not perfectly correlated), so the conformal quantile of the out-of-fold scores is, if
anything, a little high: the false-alarm promise is kept conservatively. ``docs/thresholds.md``
states this and the benchmark measures it (realised false alarms on test and on other splits).

Artifacts: the member's artifact keys with a ``_fold<j>`` suffix (``state_fold0``, ``model_fold1``);
``from_artifacts`` groups them back. The out-of-fold scores travel in the training summary.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any, ClassVar

import numpy as np

from wood_anomaly.data.validation_set import build_validation_set
from wood_anomaly.evaluation.thresholds import fold_assignment

logger = logging.getLogger(__name__)


class FoldEnsemble:
    """``n_folds`` members of ``member_path`` (``"package.module:Class"``), cross-fitted; see the module docstring.

    ``fold_validation``: pass each member its held-out fold as ``val_images`` (models that need held-out
    good images to fit, e.g. EfficientAD's map quantiles) or ``None`` (early stopping on the training loss).
    """

    member_path: ClassVar[str] = ""
    n_folds: ClassVar[int] = 2
    fold_validation: ClassVar[bool] = False
    name: ClassVar[str] = "fold_ensemble"

    def __init__(self, **member_params: Any) -> None:
        self.member_params = dict(member_params)
        self.members: list[Any] = []
        self.threshold_scores: np.ndarray | None = None
        self.validation_defect_scores: np.ndarray | None = None
        self.validation_defect_kinds: np.ndarray | None = None
        self.folds: np.ndarray | None = None
        self.history: dict[str, list[float]] = {}
        self.device_used: str | None = None

    @classmethod
    def member_class(cls) -> type:
        from wood_anomaly.models.registry import import_model_class

        return import_model_class(cls.member_path)

    def fit(self, train_images: np.ndarray, val_images: np.ndarray | None = None, *, seed: int = 0, **kwargs: Any) -> FoldEnsemble:
        """Cross-fit on the good boards ``train_images`` plus ``val_images`` (every good training board is
        scored out of fold; none is needed for anything else)."""
        images = np.asarray(train_images)
        if val_images is not None and len(val_images):
            images = np.concatenate([images, np.asarray(val_images)])
        self.folds = fold_assignment(len(images), self.n_folds, seed)
        scores = np.full(len(images), np.nan)
        # label-free validation evidence: each held-out board with a pasted synthetic defect, scored by the
        # member that never saw the board (wood_anomaly.data.validation_set)
        validation = build_validation_set(images, seed)
        defect_rows = np.flatnonzero(validation.labels == 1)
        validation_scores = np.full(defect_rows.size, np.nan)
        self.members = []
        start = time.perf_counter()
        for j in range(self.n_folds):
            held_out = self.folds == j
            member = self.member_class()(**self.member_params)
            logger.info("%s: fold member %d/%d on %d boards (%d held out)", self.name, j + 1, self.n_folds,
                        int((~held_out).sum()), int(held_out.sum()))
            member.fit(images[~held_out], images[held_out] if self.fold_validation else None, seed=seed + j, **kwargs)
            fold_scores, _ = member.score(images[held_out])
            scores[held_out] = np.asarray(fold_scores, dtype=np.float64)
            defect_scores, _ = member.score(validation.images[defect_rows[held_out[validation.source[defect_rows]]]])
            validation_scores[held_out[validation.source[defect_rows]]] = np.asarray(defect_scores, dtype=np.float64)
            self.members.append(member)
            for key, values in getattr(member, "history", {}).items():
                self.history[f"fold{j}_{key}"] = [float(v) for v in values]
        self.threshold_scores = scores
        self.validation_defect_scores = validation_scores
        self.validation_defect_kinds = validation.kinds[defect_rows]
        self.device_used = getattr(self.members[0], "device_used", None)
        logger.info("%s: %d out-of-fold scores from %d members in %.1f s", self.name, scores.size, self.n_folds,
                    time.perf_counter() - start)
        return self

    def score_members(self, images: np.ndarray, *, batch_size: int = 16) -> list[tuple[np.ndarray, np.ndarray]]:
        return [member.score(images, batch_size=batch_size) for member in self.members]

    @contextmanager
    def memoise_repeated_inputs(self) -> Iterator[list[Any]]:
        """Every member's ``memoise_repeated_inputs()`` (where it has one) for the duration of the block;
        yields their memos (empty when no member memoises)."""
        with ExitStack() as stack:
            memos: list[Any] = []
            for member in self.members:
                if hasattr(member, "memoise_repeated_inputs"):
                    memos.extend(stack.enter_context(member.memoise_repeated_inputs()))
            yield memos

    def score(self, images: np.ndarray, *, batch_size: int = 16) -> tuple[np.ndarray, np.ndarray]:
        """Mean of the members' image scores and anomaly maps."""
        if not self.members:
            raise RuntimeError(f"{self.name}: fit() or from_artifacts() first")
        results = self.score_members(images, batch_size=batch_size)
        scores = np.mean([np.asarray(s, dtype=np.float64) for s, _ in results], axis=0)
        maps = np.mean([np.asarray(m, dtype=np.float32) for _, m in results], axis=0)
        return scores, maps

    def reconstruction_grid(self, images: np.ndarray, max_images: int = 8) -> np.ndarray:
        """The first member's reconstructions (reconstruction models only)."""
        return self.members[0].reconstruction_grid(images, max_images=max_images)

    def to_artifacts(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for j, member in enumerate(self.members):
            for key, value in member.to_artifacts().items():
                out[f"{key}_fold{j}"] = value
        return out

    @classmethod
    def artifact_keys(cls, member_keys: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(f"{key}_fold{j}" for j in range(cls.n_folds) for key in member_keys)

    @classmethod
    def from_artifacts(cls, **artifacts: Any) -> FoldEnsemble:
        ensemble = cls()
        member_cls = cls.member_class()
        for j in range(cls.n_folds):
            suffix = f"_fold{j}"
            own = {k[: -len(suffix)]: v for k, v in artifacts.items() if k.endswith(suffix)}
            if not own:
                raise ValueError(f"{cls.__name__}.from_artifacts: no artifacts for fold {j} (keys: {sorted(artifacts)})")
            ensemble.members.append(member_cls.from_artifacts(**own))
        return ensemble


class EfficientADFolds(FoldEnsemble):
    member_path = "wood_anomaly.models.efficientad:EfficientAD"
    fold_validation = True  # its map quantiles come from held-out good boards: the member's held-out fold
    name = "efficientad"
    concurrent_scoring = True  # torch members in eval mode: score() may run in several threads at once

    def score_members(self, images: np.ndarray, *, batch_size: int = 16) -> list[tuple[np.ndarray, np.ndarray]]:
        """The members share one frozen pretrained teacher: it runs once per batch and flip for all of them
        (60% of a member's scoring time on a CPU); the results equal separate ``member.score`` calls."""
        from wood_anomaly.models.efficientad.model import score_together

        return score_together(self.members, images, batch_size=batch_size)


class AutoEncoderFolds(FoldEnsemble):
    member_path = "wood_anomaly.models.autoencoder:AutoEncoder"
    name = "autoencoder"


class VAEFolds(FoldEnsemble):
    member_path = "wood_anomaly.models.vae:VAE"
    name = "vae"


class GANomalyFolds(FoldEnsemble):
    member_path = "wood_anomaly.models.ganomaly:GANomaly"
    name = "ganomaly"
