"""Label-free validation set: held-out GOOD boards, the same boards with procedural defects pasted
on (exact masks), and (see :func:`nuisance_versions`) the same good boards under label-preserving
nuisances. Nothing here reads a test image or a test label; no Kedro in here.

Used to choose defaults and thresholds without test labels (tuning pipeline, out-of-fold thresholds).

Determinism: defect ``j`` on good board ``i`` is drawn from its own stream
``default_rng((seed, i, j))`` and its kind is ``kinds[(i * defects_per_image + j) % len(kinds)]``,
so the same images + seed give byte-identical arrays, and board ``i``'s defects do not depend on
how many other boards there are.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from wood_anomaly.data.nuisances import apply_nuisance, parse_nuisances
from wood_anomaly.data.synthetic import VALIDATION_DEFECT_TYPES, paste_defect

GOOD_KIND = "good"


@dataclass(frozen=True)
class ValidationSet:
    """Images with labels and masks; row order: every good board first, then the defect versions.

    images uint8 [M, H, W, 3]; masks bool [M, H, W]; labels int64 [M] (0 good, 1 defect);
    kinds str [M] ("good" or the defect kind); source int64 [M]: index of the good board each
    row was made from.
    """

    images: np.ndarray
    masks: np.ndarray
    labels: np.ndarray
    kinds: np.ndarray
    source: np.ndarray

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def n_good(self) -> int:
        return int((self.labels == 0).sum())

    @property
    def n_defect(self) -> int:
        return int((self.labels == 1).sum())

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Plain dict of arrays (for NpzDataset / MLflow artifacts)."""
        return {
            "images": self.images,
            "masks": self.masks,
            "labels": self.labels,
            "kinds": self.kinds,
            "source": self.source,
        }


def _check_good_images(good_images: np.ndarray) -> np.ndarray:
    images = np.asarray(good_images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(
            f"build_validation_set expects held-out good images as uint8 [N, H, W, 3], got {images.dtype} {images.shape}"
        )
    if images.shape[0] == 0:
        raise ValueError("build_validation_set needs at least one held-out good image, got none")
    return images


def build_validation_set(
    good_images: np.ndarray,
    seed: int,
    *,
    kinds: Sequence[str] | None = None,
    defects_per_image: int = 1,
) -> ValidationSet:
    """The held-out good boards plus ``defects_per_image`` defective copies of each.

    ``good_images``: uint8 [N, S, S, 3] boards that no model was trained on (never test images).
    Each defective copy has one procedural defect with its exact mask (see
    :mod:`wood_anomaly.data.synthetic`); ``kinds`` None = ``VALIDATION_DEFECT_TYPES``: the board-scale
    live / dead knots, resin streaks and grain cracks, then the small crack / knot / stain / scratch.
    Kinds cycle round-robin, so every kind is represented once N * defects_per_image >= len(kinds).
    """
    images = _check_good_images(good_images)
    kinds = tuple(VALIDATION_DEFECT_TYPES if kinds is None else kinds)
    if not kinds or len(set(kinds)) != len(kinds):
        raise ValueError(f"kinds must be distinct defect names, got {kinds!r}")
    if defects_per_image < 1:
        raise ValueError(f"defects_per_image must be >= 1, got {defects_per_image}")
    n, h, w, _ = images.shape
    n_def = n * defects_per_image
    out_images = np.empty((n + n_def, h, w, 3), dtype=np.uint8)
    out_masks = np.zeros((n + n_def, h, w), dtype=bool)
    out_images[:n] = images
    out_kinds = [GOOD_KIND] * n
    source = list(range(n))
    row = n
    for i in range(n):
        for j in range(defects_per_image):
            kind = kinds[(i * defects_per_image + j) % len(kinds)]
            rng = np.random.default_rng((int(seed), i, j))
            out_images[row], out_masks[row] = paste_defect(images[i], rng, kind)
            out_kinds.append(kind)
            source.append(i)
            row += 1
    labels = np.concatenate([np.zeros(n, dtype=np.int64), np.ones(n_def, dtype=np.int64)])
    return ValidationSet(
        images=out_images,
        masks=out_masks,
        labels=labels,
        kinds=np.asarray(out_kinds, dtype=str),
        source=np.asarray(source, dtype=np.int64),
    )


def nuisance_versions(
    good_images: np.ndarray, nuisances: Mapping[str, Any] | Sequence[str] | None = None
) -> dict[str, np.ndarray]:
    """The held-out good boards under each label-preserving nuisance: ``{name: uint8 [N, H, W, 3]}``.

    ``nuisances`` is the ``evaluation.nuisances`` mapping (``name -> {kind, ...}``), a list of
    names, or None for the issue-8 list (see :mod:`wood_anomaly.data.nuisances`). Every row stays a
    GOOD board: a model should not flag it.
    """
    images = _check_good_images(good_images)
    return {name: apply_nuisance(spec, images)[0] for name, spec in parse_nuisances(nuisances).items()}
