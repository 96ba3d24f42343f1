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
model has comes from its ``ModelSpec`` (``wood_anomaly.pipelines.<model>.pipeline.SPEC``); how each
artifact is stored comes from ``artifact_datasets`` (patterns like the catalog's factories).
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from kedro.io.core import AbstractDataset, DatasetError
from kedro_datasets._typing import JSONPreview
from parse import parse

from wood_anomaly.pipelines.model_nodes import import_model_class
from wood_anomaly.reporting.figures import map_display_range
from wood_anomaly.reporting.results import (
    latest_version,
    list_versions,
    npz_array_shape,
    read_json,
    read_npz,
    version_file,
)

#: how each kind of artifact is saved by the model pipelines: KEEP IN SYNC with the "{model}.<artifact>"
#: factories of conf/base/catalog.yml (minus the MLflow wrapper); TensorFlowModelDataset needs its
#: save_args even to load (``save_format: h5`` picks the h5 reader).
DEFAULT_ARTIFACT_DATASETS: dict[str, dict[str, Any]] = {
    "state": {"type": "wood_anomaly.datasets.TorchStateDataset", "filepath": "{models_dir}/state.pt"},
    "memory_bank": {"type": "wood_anomaly.datasets.FaissIndexDataset", "filepath": "{models_dir}/memory_bank.faiss"},
    "keras_{part}": {
        "type": "tensorflow.TensorFlowModelDataset",
        "filepath": "{models_dir}/{part}.h5",
        "save_args": {"save_format": "h5", "include_optimizer": False},
        "load_args": {"compile": False},
    },
}


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
    """The ``ModelSpec`` of a model (``wood_anomaly.pipelines.<name>.pipeline.SPEC``)."""
    from wood_anomaly.hooks import MODEL_NAMES

    if name not in MODEL_NAMES:
        raise NoTrainedModelError(f"unknown model {name!r}: inference.model must be one of {', '.join(MODEL_NAMES)}")
    try:
        return importlib.import_module(f"wood_anomaly.pipelines.{name}.pipeline").SPEC
    except ModuleNotFoundError as exc:
        raise NoTrainedModelError(f"model {name!r} has no pipeline in this version of the project ({exc})") from exc


class TrainedModelDataset(AbstractDataset[None, TrainedModel]):
    """Loads a :class:`TrainedModel`; cannot be saved (the model pipelines write the artifacts).

    Args:
        model: model name (``patchcore``, ``padim``, ...).
        model_version: Kedro version (run timestamp) to load; None = the newest version with metrics.
            (Not ``version``: Kedro reserves that key in dataset configs.)
        models_dir / metrics_path / scores_path: where the model pipeline saved (``{model}`` is
            replaced by the name).
        artifact_datasets: ``{artifact dataset name pattern: dataset config}``; ``{models_dir}``
            and pattern fields (``{part}``) are filled in. Defaults mirror ``catalog.yml``.
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
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self._model = str(model)
        self._version = str(model_version) if model_version not in (None, "", "null", "None", "latest") else None
        self._models_dir = models_dir.format(model=self._model)
        self._metrics_path = metrics_path.format(model=self._model)
        self._scores_path = scores_path.format(model=self._model)
        self._artifact_datasets = artifact_datasets or DEFAULT_ARTIFACT_DATASETS
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
        import_model_class(spec.model_path)  # before reading weights: Keras models register their layers on import
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
