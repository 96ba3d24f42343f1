"""An informative log for long runs: where the run is, and what it produced.

- Before each model's ``train`` node: ``[3/6] efficientad (EfficientAD): train -> score -> evaluate``
  (numbered in the order the runner reaches them).
- At the end of a run that built the comparison report: the report's path and the headline table
  (and where the MLflow UI shows the model runs).
- Before a run with Keras models: TensorFlow is imported without its native start-up lines
  (:func:`wood_anomaly.quiet.import_tensorflow`), before the catalog's Keras datasets import it.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import pandas as pd
from kedro.framework.hooks import hook_impl

from wood_anomaly.models.registry import MODELS

logger = logging.getLogger("wood_anomaly")

#: comparison-table column -> short header in the log (the report and comparison.csv have them all)
HEADLINE_COLUMNS = {"model": "model", "image_auroc": "AUROC", "image_f1": "F1@thr", "pixel_auroc": "pxAUROC",
                    "aupro": "AUPRO", "fit_seconds": "fit_s"}
REPORT_DATASET = "reporting.comparison_report"
TABLE_DATASET = "reporting.comparison_table"


def headline_table(table: pd.DataFrame) -> str:
    """The comparison table's headline columns as fixed-width text (3 decimals, seconds as integers)."""
    columns = [c for c in HEADLINE_COLUMNS if c in table.columns]
    shown = table[columns].copy()
    for column in columns:
        if column == "fit_seconds":
            shown[column] = shown[column].map(lambda v: "n/a" if pd.isna(v) else f"{v:.0f}")
        elif column != "model":
            shown[column] = shown[column].map(lambda v: "n/a" if pd.isna(v) else f"{v:.3f}")
    return shown.rename(columns=HEADLINE_COLUMNS).to_string(index=False)


def saved_path(dataset: Any) -> str | None:
    """Where a versioned file dataset just saved (None when it cannot tell)."""
    try:
        from kedro.io.core import get_filepath_str

        path = get_filepath_str(dataset._get_versioned_path(dataset.resolve_save_version()), dataset._protocol)
    except Exception:  # noqa: BLE001 - not a versioned file dataset
        return None
    relative = os.path.relpath(path)  # short in the log: relative to the project folder the run started in
    return path if relative.startswith("..") else relative


class RunLogHook:
    """Progress lines per model and a closing summary (see the module docstring)."""

    def __init__(self) -> None:
        self._models: list[str] = []
        self._started: list[str] = []
        self._catalog: Any = None
        self._report: str | None = None
        self._table: pd.DataFrame | None = None

    @hook_impl(tryfirst=True)
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        from wood_anomaly.hooks import models_in

        self._models = models_in(pipeline.nodes)
        self._started = []
        self._catalog = catalog
        self._report, self._table = None, None
        if any(MODELS[m].framework.startswith("Keras") for m in self._models):
            from wood_anomaly.quiet import import_tensorflow

            import_tensorflow()
        if len(self._models) > 1:
            logger.info("This run trains %d models: %s", len(self._models), ", ".join(self._models))

    @hook_impl
    def before_node_run(self, node: Any, catalog: Any, inputs: dict[str, Any], is_async: bool, run_id: str) -> None:
        from wood_anomaly.hooks import model_of

        model = model_of(node)
        if model is None or not node.name.endswith(".train") or model not in self._models or model in self._started:
            return
        self._started.append(model)  # numbered in the order Kedro runs them
        logger.info("[%d/%d] %s (%s): train -> score -> evaluate", len(self._started), len(self._models), model,
                    MODELS[model].title or model)

    @hook_impl
    def after_dataset_saved(self, dataset_name: str, data: Any, node: Any) -> None:
        if dataset_name == TABLE_DATASET and isinstance(data, pd.DataFrame):
            self._table = data
        elif dataset_name == REPORT_DATASET and self._catalog is not None:
            try:
                self._report = saved_path(self._catalog.get(dataset_name))
            except Exception:  # noqa: BLE001 - the summary must never fail a run
                self._report = None

    @hook_impl(trylast=True)
    def after_pipeline_run(self, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        if self._table is None and self._report is None:
            return
        lines = ["Comparison report: " + (self._report or "data/08_reporting/comparison/report.html (latest version)")]
        if self._table is not None and len(self._table):
            lines += ["", headline_table(self._table)]
        lines += ["", "Compare the runs in MLflow: make mlflow-ui (prints the link to the model runs)"]
        logger.info("\n".join(lines))
