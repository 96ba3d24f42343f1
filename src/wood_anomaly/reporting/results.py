"""Find Kedro dataset versions on disk and load a model's saved results (no Kedro imports).

A versioned Kedro dataset ``<dir>/<name>`` is stored as ``<dir>/<name>/<version>/<name>``, with
``version`` a UTC timestamp such as ``2026-11-29T08.41.03.120Z`` (sortable as text). Every output of
one ``kedro run`` shares the run's version, so a model's metrics, scores and weights saved together
carry the same version string.
"""

from __future__ import annotations

import io
import json
import logging
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

#: files in a model's weights folder that are not weights (left out of the weights size).
NOT_WEIGHTS = frozenset({"training_summary.json"})


class ResultsError(RuntimeError):
    """Saved results that cannot be used (missing file for a pinned version, unreadable file)."""


def list_versions(versioned_path: str | Path) -> list[str]:
    """Versions of a Kedro versioned dataset at ``versioned_path``, oldest first ([] when none)."""
    path = Path(versioned_path)
    if not path.is_dir():
        return []
    return sorted(p.name for p in path.iterdir() if (p / path.name).is_file())


def latest_version(versioned_path: str | Path, not_after: str | None = None) -> str | None:
    """Newest version (optionally the newest not later than ``not_after``), or None."""
    versions = [v for v in list_versions(versioned_path) if not_after is None or v <= not_after]
    return versions[-1] if versions else None


def version_file(versioned_path: str | Path, version: str) -> Path:
    """``<dir>/<name>/<version>/<name>``."""
    path = Path(versioned_path)
    return path / version / path.name


def npz_array_shape(path: str | Path, key: str) -> tuple[int, ...] | None:
    """Shape of one array of an ``.npz`` file, read from its header only (None when absent)."""
    with zipfile.ZipFile(path) as archive:
        name = f"{key}.npy"
        if name not in archive.namelist():
            return None
        with archive.open(name) as member:
            version = np.lib.format.read_magic(member)
            reader = (
                np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            )
            shape, _fortran, _dtype = reader(member)
    return tuple(int(s) for s in shape)


def read_npz(path: str | Path) -> dict[str, np.ndarray]:
    """All arrays of an ``.npz`` file (no pickle)."""
    try:
        with np.load(io.BytesIO(Path(path).read_bytes()), allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files}
    except Exception as exc:  # noqa: BLE001 - reported with the file name
        raise ResultsError(f"cannot read scores file {path}: {type(exc).__name__}: {exc}") from exc


def read_json(path: str | Path) -> dict[str, Any]:
    try:
        return json.loads(Path(path).read_text())
    except Exception as exc:  # noqa: BLE001 - reported with the file name
        raise ResultsError(f"cannot read {path}: {type(exc).__name__}: {exc}") from exc


def weights_files(models_dir: str | Path, version: str) -> list[Path]:
    """The weights a model used at ``version``: the newest version not later than ``version`` of
    every versioned file in its models folder (``state.pt``, ``memory_bank.faiss``, ``*.h5``),
    training summaries left out."""
    root = Path(models_dir)
    if not root.is_dir():
        return []
    files = []
    for entry in sorted(root.iterdir()):
        if entry.name in NOT_WEIGHTS or not entry.is_dir():
            continue
        found = latest_version(entry, not_after=version)  # saved with, or (when re-scored) before, the results
        if found is not None:
            files.append(version_file(entry, found))
    return files


@dataclass
class ModelResult:
    """One model's saved results, all from one version (one ``kedro run``) where possible."""

    model: str
    version: str  # version of metrics.json (the row's version in the report)
    metrics: dict[str, Any]
    scores: dict[str, np.ndarray]
    scores_version: str
    weights: list[Path] = field(default_factory=list)
    metrics_file: Path | None = None

    @property
    def weights_bytes(self) -> int | None:
        return sum(p.stat().st_size for p in self.weights) if self.weights else None

    @property
    def threshold(self) -> float:
        return float(self.metrics["threshold"])


def load_model_result(
    model: str,
    metrics_path: str | Path,
    scores_path: str | Path,
    models_dir: str | Path | None = None,
    version: str | None = None,
) -> ModelResult | None:
    """Load ``model``'s metrics (latest, or the pinned ``version``) and the scores of the same run.

    Returns None when the model has never been evaluated (no metrics version on disk). A pinned
    version that does not exist is an error that lists the versions there are. The scores come
    from the same version when saved in the same run, else from the newest earlier one (logged).
    """
    available = list_versions(metrics_path)
    if version is None:
        if not available:
            return None
        version = available[-1]
    elif version not in available:
        raise ResultsError(
            f"{model}: no metrics saved at version {version!r} under {metrics_path}; "
            f"versions there: {available or 'none'}"
        )
    metrics_file = version_file(metrics_path, version)
    metrics = read_json(metrics_file)
    scores_version = version if version in list_versions(scores_path) else latest_version(scores_path, version)
    if scores_version is None:
        raise ResultsError(
            f"{model}: metrics {metrics_file} have no scores saved with or before them under {scores_path}"
        )
    if scores_version != version:
        logger.warning("%s: metrics version %s uses scores version %s", model, version, scores_version)
    scores = read_npz(version_file(scores_path, scores_version))
    weights = weights_files(models_dir, scores_version) if models_dir else []
    return ModelResult(
        model=model,
        version=version,
        metrics=metrics,
        scores=scores,
        scores_version=scores_version,
        weights=weights,
        metrics_file=metrics_file,
    )
