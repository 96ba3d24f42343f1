"""kedro-mlflow datasets adapted to this project (Kedro 1.x catalogs, plain metric dicts).

- :class:`MlflowArtifactDataset`: kedro-mlflow's artifact wrapper, versionable the Kedro 1.x way.
- :class:`MlflowMetricsDataset`: logs ``{name: float | [float, ...]}`` (what the evaluate nodes return).
- :class:`MlflowRegisteredModelDataset`: logs + registers a trained model as an MLflow pyfunc
  (``wood-anomaly-<model>``, one new version per run).

``MlflowArtifactDataset``
-------------------------

kedro-mlflow's ``MlflowArtifactDataset`` builds its inner dataset itself, so an inner
``versioned: true`` gets a save version of its own (a fresh timestamp), not the run's. Kedro 1.x's
``DataCatalog`` then refuses it: ``VersionAlreadyExistsError: Cannot add a dataset ... All datasets
in the catalog must have the same save version`` (kedro-org/kedro#4738, #4327). This subclass takes
``versioned: true`` at its own level, where the catalog passes the run's ``Version`` (and any
``--load-versions``), and gives that version to the inner dataset::

    reporting.comparison_table:
      type: wood_anomaly.datasets.mlflow_tracking.MlflowArtifactDataset
      artifact_path: comparison
      versioned: true                  # here, not inside `dataset`
      dataset:
        type: pandas.CSVDataset
        filepath: data/08_reporting/comparison/comparison.csv

Everything else (logging the saved file to the active MLflow run, or to ``run_id``) is kedro-mlflow's.
"""

from __future__ import annotations

from typing import Any

from kedro.io.core import AbstractDataset, DatasetError, Version
from kedro_mlflow.io.artifacts import MlflowArtifactDataset as _KedroMlflowArtifactDataset
from kedro_mlflow.io.metrics import MlflowMetricsHistoryDataset


class MlflowArtifactDataset(_KedroMlflowArtifactDataset):
    """kedro-mlflow's artifact wrapper, versioned with the catalog's (the run's) version."""

    def __new__(
        cls,
        dataset: str | dict[str, Any],
        run_id: str | None = None,
        artifact_path: str | None = None,
        credentials: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
        version: Version | None = None,
    ) -> Any:
        if version is not None:
            if not isinstance(dataset, dict):
                raise DatasetError("a versioned MlflowArtifactDataset needs `dataset` as a dict with a filepath")
            dataset = {**dataset, "versioned": True}
        instance = _KedroMlflowArtifactDataset.__new__(
            _KedroMlflowArtifactDataset,
            dataset=dataset,
            run_id=run_id,
            artifact_path=artifact_path,
            credentials=credentials,
            metadata=metadata,
        )
        if version is not None:
            if not hasattr(instance, "_version"):
                raise DatasetError(f"{type(instance).__name__} cannot be versioned (its dataset type is not versionable)")
            instance._version = version  # the run's save version / the requested load version
        return instance


class MlflowMetricsDataset(MlflowMetricsHistoryDataset):
    """Logs a plain dict of metrics: ``{name: float}`` (step 0) and ``{name: [float, ...]}`` (one step
    per value, e.g. per-epoch losses), converted to kedro-mlflow's ``{"value", "step"}`` records.

    Same arguments as ``MlflowMetricsHistoryDataset`` (``prefix``, ``run_id``); ``prefix: ""`` keeps
    the names as given, so every model's run has the same metric names::

        "{model}.mlflow_metrics":
          type: wood_anomaly.datasets.mlflow_tracking.MlflowMetricsDataset
          prefix: ""
    """

    @staticmethod
    def to_records(data: dict[str, Any]) -> dict[str, Any]:
        """``{"auroc": 0.9, "loss": [1.0, 0.5]}`` -> kedro-mlflow's records (NaN/None values dropped)."""
        import math

        def finite(value: Any) -> bool:
            return value is not None and math.isfinite(float(value))

        records: dict[str, Any] = {}
        for key, value in data.items():
            if isinstance(value, dict) or (isinstance(value, list) and value and isinstance(value[0], dict)):
                records[key] = value  # already in kedro-mlflow's format
            elif isinstance(value, (list, tuple)):
                steps = [{"value": float(v), "step": i} for i, v in enumerate(value) if finite(v)]
                if steps:
                    records[key] = steps
            elif isinstance(value, bool) or not isinstance(value, (int, float)):
                raise DatasetError(f"metric {key!r} must be a number or a list of numbers, got {type(value).__name__}")
            elif finite(value):
                records[key] = {"value": float(value), "step": 0}
        return records

    def _save(self, data: dict[str, Any]) -> None:
        """kedro-mlflow logs one metric value per call, one SQLite transaction each (~9 ms): a model's
        per-step histories and robustness metrics (~1,000 values) took ~9 s. Here they go to the same run,
        with the same keys, values and steps, in ``log_batch`` calls of at most 1,000 values."""
        import time

        from mlflow.entities import Metric
        from mlflow.tracking import MlflowClient
        from mlflow.utils.validation import MAX_METRICS_PER_BATCH

        records = self.to_records(data)
        try:
            run_id = self.run_id
        except DatasetError:  # no run to log into: kedro-mlflow's behaviour (mlflow.log_metric starts one)
            super()._save(records)
            return
        if not self._logging_activated:
            return
        stamp = int(time.time() * 1000)
        metrics = [
            Metric(key, float(value), stamp, int(step))
            for name, item in records.items()
            for key, value, step in self._build_args_list_from_metric_item(name, item)
        ]
        client = MlflowClient()
        for start in range(0, len(metrics), MAX_METRICS_PER_BATCH):
            client.log_batch(run_id, metrics=metrics[start : start + MAX_METRICS_PER_BATCH])


class MlflowRegisteredModelDataset(AbstractDataset[dict[str, Any], Any]):
    """Saves a trained model to the MLflow Model Registry as a pyfunc: ``wood-anomaly-<model>``, a new version
    per save (see :mod:`wood_anomaly.serving`). Loads the newest registered version as a pyfunc model.

    Saved data: ``{"image_size": (h, w), "example": uint8 image, "display_range": (lo, hi)}`` (the
    ``<model>.register`` node). The weights and threshold are read from the files the run saved at the
    catalog's save version (``versioned: true``), so the registered model is exactly that version.
    Logs into ``run_id`` when set (the project's hook points it at the model's child run), else
    into the active (kedro-mlflow) run::

        "{model}.registered_model":
          type: wood_anomaly.datasets.mlflow_tracking.MlflowRegisteredModelDataset
          model: "{model}"
          versioned: true
    """

    def __init__(
        self,
        *,
        model: str,
        models_dir: str = "data/06_models/{model}",
        metrics_path: str = "data/08_reporting/{model}/metrics.json",
        scores_path: str = "data/07_model_output/{model}/scores.npz",
        run_id: str | None = None,
        version: Version | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self.model = str(model)
        self.models_dir, self.metrics_path, self.scores_path = models_dir, metrics_path, scores_path
        self.run_id = run_id
        self._version = version
        self.metadata = metadata

    def _save(self, data: dict[str, Any]) -> None:
        from wood_anomaly.reporting.results import latest_version
        from wood_anomaly.serving.register import log_and_register

        version = self._version.save if self._version is not None else None
        if version is None:  # not versioned in the catalog: the newest saved metrics
            version = latest_version(self.metrics_path.format(model=self.model))
        if version is None:
            raise DatasetError(f"{self.model}: no saved metrics.json to register (train the model first)")
        log_and_register(
            self.model, version, image_size=tuple(data["image_size"]), example=data["example"],
            display_range=data.get("display_range"), run_id=self.run_id, models_dir=self.models_dir,
            metrics_path=self.metrics_path, scores_path=self.scores_path, batch_size=int(data.get("batch_size", 16)),
        )

    def _load(self) -> Any:
        import mlflow.pyfunc

        from wood_anomaly.serving.register import registered_name

        return mlflow.pyfunc.load_model(f"models:/{registered_name(self.model)}/latest")

    def _describe(self) -> dict[str, Any]:
        return {"model": self.model, "registered_name": f"wood-anomaly-{self.model}", "run_id": self.run_id}
