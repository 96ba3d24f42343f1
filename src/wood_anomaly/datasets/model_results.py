"""``ModelResultsDataset``: read-only view of every model's latest saved results (for the report).

It reads what the model pipelines saved (Kedro versioned files), so the comparison report works
after one default ``kedro run`` as well as after running models one by one on different days.
Models that were never run are skipped (and listed as such).

Example catalog entry (``conf/base/catalog_reporting.yml``)::

    reporting.model_results:
      type: wood_anomaly.datasets.model_results.ModelResultsDataset
      metrics_path: data/08_reporting/{model}/metrics.json
      scores_path: data/07_model_output/{model}/scores.npz
      models_dir: data/06_models/{model}
      versions: {}          # e.g. {patchcore: 2026-11-29T08.41.03.120Z} pins one model's version
"""

from __future__ import annotations

import json
from typing import Any

from kedro.io.core import AbstractDataset, DatasetError
from kedro_datasets._typing import TablePreview

from wood_anomaly.models.registry import MODEL_NAMES
from wood_anomaly.reporting.results import (
    ModelResult,
    ResultsError,
    latest_version,
    list_versions,
    load_model_result,
    read_json,
    version_file,
)

#: every model the project knows, in report order.
DEFAULT_MODELS = MODEL_NAMES


class ModelResultsDataset(AbstractDataset[None, dict[str, Any]]):
    """Loads ``{"results": [ModelResult, ...], "not_run": [model, ...]}``; cannot be saved.

    Args:
        models: model names to look for, in report order (default: all six).
        metrics_path / scores_path / models_dir: where the model pipelines save; ``{model}`` is
            replaced by the model name (same paths as the ``{model}.*`` catalog factories).
        versions: optional ``{model: version}`` pins; other models use their latest version.
        metadata: free-form (kedro-viz reads ``metadata.kedro-viz``).
    """

    def __init__(
        self,
        *,
        models: list[str] | tuple[str, ...] | None = None,
        metrics_path: str = "data/08_reporting/{model}/metrics.json",
        scores_path: str = "data/07_model_output/{model}/scores.npz",
        models_dir: str = "data/06_models/{model}",
        versions: dict[str, str] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self._models = list(models or DEFAULT_MODELS)
        self._metrics_path = metrics_path
        self._scores_path = scores_path
        self._models_dir = models_dir
        self._versions = {k: str(v) for k, v in (versions or {}).items() if v}
        unknown = sorted(set(self._versions) - set(self._models))
        if unknown:
            raise DatasetError(f"ModelResultsDataset: versions pinned for unknown model(s) {unknown}; models: {self._models}")
        self.metadata = metadata

    def _paths(self, model: str) -> tuple[str, str, str]:
        return (
            self._metrics_path.format(model=model),
            self._scores_path.format(model=model),
            self._models_dir.format(model=model),
        )

    def load(self) -> dict[str, Any]:
        results: list[ModelResult] = []
        not_run: list[str] = []
        for model in self._models:
            metrics_path, scores_path, models_dir = self._paths(model)
            try:
                result = load_model_result(model, metrics_path, scores_path, models_dir, self._versions.get(model))
            except ResultsError as exc:
                raise DatasetError(f"ModelResultsDataset: {exc}") from exc
            if result is None:
                self._logger.info("%s: no saved metrics under %s (never run): left out of the report", model, metrics_path)
                not_run.append(model)
            else:
                results.append(result)
        return {"results": results, "not_run": not_run}

    def save(self, data: Any) -> None:
        raise DatasetError(
            "ModelResultsDataset is read-only: it reads the results the model pipelines saved"
        )

    def _exists(self) -> bool:
        return any(list_versions(self._paths(m)[0]) for m in self._models)

    def _describe(self) -> dict[str, Any]:
        return {
            "models": self._models,
            "metrics_path": self._metrics_path,
            "scores_path": self._scores_path,
            "models_dir": self._models_dir,
            "versions": self._versions,
        }

    def preview(self) -> TablePreview:
        """kedro-viz table: which version of each model the report would read, with its headline numbers."""
        columns = ["model", "version", "image_auroc", "image_f1", "f1_max", "pixel_auroc"]
        rows = []
        for model in self._models:
            metrics_path = self._paths(model)[0]
            version = self._versions.get(model) or latest_version(metrics_path)
            if version is None:
                rows.append([model, "never run", None, None, None, None])
                continue
            try:
                metrics = read_json(version_file(metrics_path, version))
            except ResultsError:
                metrics = {}
            rows.append([model, version, *(metrics.get(k) for k in columns[2:])])
        return TablePreview(json.loads(json.dumps({"index": list(range(len(rows))), "columns": columns, "data": rows})))
