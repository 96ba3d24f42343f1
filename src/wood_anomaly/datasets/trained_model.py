"""``TrainedModelDataset``: read-only, loads the latest (or a pinned) trained model of one name.

The inference pipeline configures it from the run's params through Kedro's ``runtime_params``
resolver (``conf/base/catalog_reporting.yml``)::

    inference.trained_model:
      type: wood_anomaly.datasets.trained_model.TrainedModelDataset
      model: ${runtime_params:inference.model, patchcore}
      model_version: ${runtime_params:inference.version, null}

What it loads (a :class:`TrainedModel`): the model's saved artifacts (read with the same dataset
types the model pipeline saved them with), its metrics.json (the validation threshold), the image
size it was trained at and a colour scale for heatmaps, all from one version. Which artifacts a
model has comes from the model registry (``wood_anomaly.models.registry``); how each artifact is
stored comes from the project's catalog config (its ``{model}.<artifact>`` factories, read with
``OmegaConfigLoader``), or from ``artifact_datasets``.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from kedro.io.core import AbstractDataset, DatasetError
from kedro_datasets._typing import JSONPreview
from parse import parse

from wood_anomaly.models.registry import UnknownModelError, import_model_class
from wood_anomaly.models.registry import model_spec as registry_spec
from wood_anomaly.reporting.figures import map_display_range
from wood_anomaly.reporting.results import (
    latest_version,
    list_versions,
    npz_array_shape,
    read_json,
    read_npz,
    version_file,
)

DEFAULT_MODELS_DIR = "data/06_models/{model}"


def find_conf_source(start: Path | None = None) -> Path:
    """The ``conf/`` folder of the Kedro project around ``start`` (default: the working directory, where
    ``kedro run`` runs), else the one of the source checkout this package lives in."""
    from kedro.utils import find_kedro_project

    project = find_kedro_project(Path(start or Path.cwd()).resolve())
    candidates = [Path(project) / "conf"] if project else []
    candidates.append(Path(__file__).resolve().parents[3] / "conf")
    for conf in candidates:
        if (conf / "base").is_dir():
            return conf
    raise DatasetError(
        f"TrainedModelDataset: no Kedro project conf/ found (looked at {', '.join(map(str, candidates))}); "
        "run from the project folder or pass artifact_datasets"
    )


def catalog_artifact_datasets(conf_source: str | Path | None = None) -> dict[str, dict[str, Any]]:
    """How the model pipelines save each kind of artifact, read from the project's catalog config.

    Takes the ``"{model}.<artifact>"`` dataset factories of the catalog (e.g. ``{model}.state``,
    ``{model}.keras_{part}``) that store an artifact of some model in :mod:`wood_anomaly.models.registry`,
    unwraps kedro-mlflow's ``MlflowArtifactDataset`` (the inner dataset is what is on disk), drops
    ``versioned`` (the loader sets it) and writes ``data/06_models/{model}`` as ``{models_dir}``.
    Returns ``{"state": {...}, "keras_{part}": {...}, ...}``.
    """
    from kedro.config import OmegaConfigLoader
    from parse import parse as parse_pattern

    from wood_anomaly.models.registry import MODELS
    from wood_anomaly.settings import CONFIG_LOADER_ARGS

    conf = Path(conf_source) if conf_source is not None else find_conf_source()
    loader = OmegaConfigLoader(str(conf), **CONFIG_LOADER_ARGS)
    catalog = loader["catalog"]
    artifact_names = {name for spec in MODELS.values() for name in spec.artifacts.values()}
    out: dict[str, dict[str, Any]] = {}
    for key, config in catalog.items():
        if not key.startswith("{model}.") or not isinstance(config, dict):
            continue
        pattern = key[len("{model}."):]
        if not any(pattern == name or parse_pattern(pattern, name) is not None for name in artifact_names):
            continue
        inner = dict(config.get("dataset", config)) if isinstance(config.get("dataset"), dict) else dict(config)
        inner.pop("versioned", None)
        filepath = str(inner.get("filepath", ""))
        if filepath.startswith(DEFAULT_MODELS_DIR):
            inner["filepath"] = "{models_dir}" + filepath[len(DEFAULT_MODELS_DIR):]
        out[pattern] = inner
    missing = sorted(n for n in artifact_names if not any(p == n or parse_pattern(p, n) for p in out))
    if missing:
        raise DatasetError(f"the catalog in {conf} has no '{{model}}.<artifact>' factory for artifacts {missing}")
    return out


@functools.lru_cache(maxsize=4)
def _cached_artifact_datasets(conf: str) -> dict[str, dict[str, Any]]:
    return catalog_artifact_datasets(conf)


def __getattr__(name: str) -> Any:  # DEFAULT_ARTIFACT_DATASETS: read from the catalog on first use
    if name == "DEFAULT_ARTIFACT_DATASETS":
        return _cached_artifact_datasets(str(find_conf_source()))
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class NoTrainedModelError(DatasetError):
    """The model was never trained (or the pinned version does not exist)."""


@dataclass
class TrainedModel:
    """Everything inference needs about one saved model."""

    name: str
    version: str
    model_path: str  # "package.module:Class", from the model's ModelSpec
    artifacts: dict[str, Any]
    metrics: dict[str, Any]
    image_size: tuple[int, int]  # (height, width) the model was trained and evaluated at
    display_range: tuple[float, float] | None = None  # heatmap colour scale from its test maps
    files: dict[str, str] = field(default_factory=dict)

    @property
    def threshold(self) -> float:
        return float(self.metrics["threshold"])

    def build(self) -> Any:
        """The model object, rebuilt with ``Model.from_artifacts(**artifacts)``."""
        return import_model_class(self.model_path).from_artifacts(**self.artifacts)



def model_spec(name: str) -> Any:
    """The ``ModelSpec`` of a model (from :mod:`wood_anomaly.models.registry`)."""
    try:
        return registry_spec(name)
    except UnknownModelError as exc:
        raise NoTrainedModelError(f"inference.model: {exc}") from None


class TrainedModelDataset(AbstractDataset[None, TrainedModel]):
    """Loads a :class:`TrainedModel`; cannot be saved (the model pipelines write the artifacts).

    Args:
        model: model name (``patchcore``, ``padim``, ...).
        model_version: Kedro version (run timestamp) to load; None = the newest version with metrics.
            (Not ``version``: Kedro reserves that key in dataset configs.)
        models_dir / metrics_path / scores_path: where the model pipeline saved (``{model}`` is
            replaced by the name).
        artifact_datasets: ``{artifact dataset name pattern: dataset config}``; ``{models_dir}``
            and pattern fields (``{part}``) are filled in. Default: the project catalog's
            ``{model}.*`` factories (:func:`catalog_artifact_datasets`).
        conf_source: the project's ``conf/`` folder to read those from (default: found from the
            working directory, else this source checkout's).
    """

    def __init__(
        self,
        *,
        model: str,
        model_version: str | None = None,
        models_dir: str = "data/06_models/{model}",
        metrics_path: str = "data/08_reporting/{model}/metrics.json",
        scores_path: str = "data/07_model_output/{model}/scores.npz",
        artifact_datasets: dict[str, dict[str, Any]] | None = None,
        conf_source: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self._model = str(model)
        self._version = str(model_version) if model_version not in (None, "", "null", "None", "latest") else None
        self._models_dir = models_dir.format(model=self._model)
        self._metrics_path = metrics_path.format(model=self._model)
        self._scores_path = scores_path.format(model=self._model)
        self._given_artifact_datasets = artifact_datasets
        self._conf_source = conf_source
        self.metadata = metadata

    # ------------------------------------------------------------------ resolution
    def _resolve_version(self) -> str:
        model_spec(self._model)  # an unknown name is reported as such, not as "never trained"
        available = list_versions(self._metrics_path)
        if not available:
            raise NoTrainedModelError(
                f"no trained {self._model!r} model yet (no {self._metrics_path} version on disk): "
                f"train it first with `kedro run --pipeline={self._model}`"
            )
        if self._version is None:
            return available[-1]
        if self._version not in available:
            raise NoTrainedModelError(
                f"{self._model}: no trained model at version {self._version!r} (inference.version); "
                f"versions with metrics: {', '.join(available)}"
            )
        return self._version

    @property
    def _artifact_datasets(self) -> dict[str, dict[str, Any]]:
        if self._given_artifact_datasets:
            return self._given_artifact_datasets
        return _cached_artifact_datasets(str(Path(self._conf_source) if self._conf_source else find_conf_source()))

    def _artifact_config(self, dataset_name: str) -> dict[str, Any]:
        for pattern, config in self._artifact_datasets.items():
            found = parse(pattern, dataset_name)
            if found is not None:
                fields = {"models_dir": self._models_dir, "model": self._model, **found.named}
                return {k: (v.format(**fields) if isinstance(v, str) else v) for k, v in config.items()}
        raise DatasetError(
            f"TrainedModelDataset: no entry in artifact_datasets matches {self._model}.{dataset_name} "
            f"(patterns: {list(self._artifact_datasets)})"
        )

    def _artifact_files(self, version: str) -> dict[str, tuple[str, dict[str, Any], str]]:
        """artifact key -> (dataset name, dataset config, version to read)."""
        spec = model_spec(self._model)
        out = {}
        for key, dataset_name in spec.artifacts.items():
            config = self._artifact_config(dataset_name)
            artifact_version = latest_version(config["filepath"], not_after=version)
            if artifact_version is None:
                raise NoTrainedModelError(
                    f"{self._model}: metrics version {version} has no saved {dataset_name} at "
                    f"{config['filepath']} (versions there: {list_versions(config['filepath']) or 'none'}); "
                    f"retrain with `kedro run --pipeline={self._model}`"
                )
            out[key] = (dataset_name, config, artifact_version)
        return out

    def _image_size(self, metrics: dict[str, Any], scores_file: Path | None) -> tuple[int, int]:
        size = metrics.get("image_size")
        if size is not None:
            size = [int(size)] * 2 if np.isscalar(size) else [int(s) for s in size]
            return int(size[0]), int(size[1])
        if scores_file is not None:
            shape = npz_array_shape(scores_file, "maps")
            if shape is not None and len(shape) == 3:
                return int(shape[1]), int(shape[2])
        raise DatasetError(
            f"{self._model}: cannot tell the image size it was trained at (no image_size in its metrics "
            f"and no maps in {self._scores_path}); retrain with `kedro run --pipeline={self._model}`"
        )

    # ------------------------------------------------------------------ kedro API
    def load(self) -> TrainedModel:
        version = self._resolve_version()
        metrics = read_json(version_file(self._metrics_path, version))
        if "threshold" not in metrics:
            raise DatasetError(f"{version_file(self._metrics_path, version)} has no 'threshold'")
        spec = model_spec(self._model)
        model_class = import_model_class(spec.model_path)  # before reading weights: Keras models register their layers on import
        getattr(model_class, "member_class", lambda: model_class)()  # a fold ensemble's members (models/ensemble.py) too
        artifacts: dict[str, Any] = {}
        files: dict[str, str] = {}
        for key, (dataset_name, config, artifact_version) in self._artifact_files(version).items():
            dataset = AbstractDataset.from_config(
                f"{self._model}.{dataset_name}", {**config, "versioned": True}, load_version=artifact_version
            )
            artifacts[key] = dataset.load()
            files[key] = str(version_file(config["filepath"], artifact_version))
        scores_version = latest_version(self._scores_path, not_after=version)
        scores_file = version_file(self._scores_path, scores_version) if scores_version else None
        display_range = None
        if scores_file is not None:
            maps = read_npz(scores_file).get("maps")
            if maps is not None and maps.size:
                display_range = map_display_range(maps)
        self._logger.info("Loaded %s version %s (%s)", self._model, version, ", ".join(files.values()))
        return TrainedModel(
            name=self._model,
            version=version,
            model_path=spec.model_path,
            artifacts=artifacts,
            metrics=metrics,
            image_size=self._image_size(metrics, scores_file),
            display_range=display_range,
            files=files,
        )

    def save(self, data: Any) -> None:
        raise DatasetError(
            f"TrainedModelDataset is read-only: train with `kedro run --pipeline={self._model}` to save a model"
        )

    def _exists(self) -> bool:
        return bool(list_versions(self._metrics_path))

    def _describe(self) -> dict[str, Any]:
        return {"model": self._model, "version": self._version, "models_dir": self._models_dir,
                "metrics_path": self._metrics_path}

    def preview(self) -> JSONPreview:
        """kedro-viz: which model version inference would load, its threshold and files (no weights read)."""
        try:
            version = self._resolve_version()
            metrics = read_json(version_file(self._metrics_path, version))
            info: dict[str, Any] = {
                "model": self._model,
                "version": version,
                "threshold": metrics.get("threshold"),
                "image_auroc": metrics.get("image_auroc"),
                "files": {k: str(version_file(c["filepath"], v)) for k, (_, c, v) in self._artifact_files(version).items()},
            }
        except DatasetError as exc:
            info = {"model": self._model, "error": str(exc)}
        return JSONPreview(json.dumps(info))
