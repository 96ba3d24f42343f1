"""The comparison table: one row per model, our numbers and the seed report's beside them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from .results import ModelResult

#: CSV columns, in order (docs: README "Comparison report").
COLUMNS = [
    "model",
    "version",
    "image_auroc",
    "image_f1",
    "threshold",
    "f1_max",
    "pixel_auroc",
    "aupro",
    "off_defect_auroc",
    "fit_seconds",
    "ms_per_image",
    "weights_mb",
    "device",
    "backbone",
    "n_test_good",
    "n_test_defect",
    "seed_f1",
    "seed_auroc",
    # 95% intervals (stratified bootstrap over test images) and the operating point (docs/thresholds.md)
    "image_auroc_ci95_low",
    "image_auroc_ci95_high",
    "image_f1_ci95_low",
    "image_f1_ci95_high",
    "pixel_auroc_ci95_low",
    "pixel_auroc_ci95_high",
    "aupro_ci95_low",
    "aupro_ci95_high",
    "n_threshold_scores",
    "false_alarm_rate",
    "expected_false_alarm_rate",
    "test_false_alarm_rate",
    "test_false_alarm_rate_ci95_low",
    "test_false_alarm_rate_ci95_high",
    "tpr_at_far_0.01",
    "tpr_at_far_0.05",
    "tpr_at_far_0.1",
    "validation_image_auroc",
    "validation_image_auroc_ci95_low",
    "validation_image_auroc_ci95_high",
    "recommended",
]


def _interval(metrics: Mapping[str, Any], key: str) -> tuple[float, float]:
    value = metrics.get(key)
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return _number({"v": value[0]}, "v"), _number({"v": value[1]}, "v")
    return float("nan"), float("nan")


def interval_columns(metrics: Mapping[str, Any], recommended: str | None = None) -> dict[str, Any]:
    """The interval / operating-point / validation columns of one model's row."""
    row: dict[str, Any] = {}
    for key in ("image_auroc", "image_f1", "pixel_auroc", "aupro", "test_false_alarm_rate"):
        row[f"{key}_ci95_low"], row[f"{key}_ci95_high"] = _interval(metrics, f"{key}_ci95")
    for key in ("n_threshold_scores", "false_alarm_rate", "expected_false_alarm_rate", "test_false_alarm_rate"):
        row[key] = _number(metrics, key)
    tpr = metrics.get("tpr_at_far") or {}
    for rate in ("0.01", "0.05", "0.1"):
        row[f"tpr_at_far_{rate}"] = _number(tpr.get(rate) or {}, "tpr")
    validation = metrics.get("validation") or {}
    row["validation_image_auroc"] = _number(validation, "image_auroc")
    row["validation_image_auroc_ci95_low"], row["validation_image_auroc_ci95_high"] = _interval(validation, "image_auroc_ci95")
    row["recommended"] = recommended is not None and metrics.get("model") == recommended
    return row


def _number(metrics: Mapping[str, Any], key: str) -> float:
    value = metrics.get(key)
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def comparison_table(
    results: Sequence[ModelResult],
    seed_report: Mapping[str, Mapping[str, float]] | None = None,
    recommended: str | None = None,
) -> pd.DataFrame:
    """One row per model (in the order given) with the columns in :data:`COLUMNS`.

    ``seed_report`` maps a model name to ``{"f1": ..., "auroc": ...}`` (the seed report's oracle F1
    and ROC AUC); models it does not name get NaN there. Missing metrics are NaN, never dropped.
    """
    seed_report = seed_report or {}
    rows = []
    for result in results:
        m = result.metrics
        seed = seed_report.get(result.model, {})
        weights_bytes = result.weights_bytes
        rows.append(
            {
                "model": result.model,
                "version": result.version,
                "image_auroc": _number(m, "image_auroc"),
                "image_f1": _number(m, "image_f1"),
                "threshold": _number(m, "threshold"),
                "f1_max": _number(m, "f1_max"),
                "pixel_auroc": _number(m, "pixel_auroc"),
                "aupro": _number(m, "aupro"),
                "off_defect_auroc": _number(m, "off_defect_auroc"),
                "fit_seconds": _number(m, "fit_seconds"),
                "ms_per_image": _number(m, "score_ms_per_image"),
                "weights_mb": weights_bytes / 1e6 if weights_bytes is not None else float("nan"),
                "device": str(m.get("device", "")),
                "backbone": str(m.get("backbone", "")),
                "n_test_good": int(m.get("n_test_good", int((result.scores.get("label", np.array([])) == 0).sum()))),
                "n_test_defect": int(m.get("n_test_defect", int((result.scores.get("label", np.array([])) == 1).sum()))),
                "seed_f1": float(seed.get("f1", float("nan"))),
                "seed_auroc": float(seed.get("auroc", float("nan"))),
                **interval_columns({"model": result.model, **m}, recommended),
            }
        )
    return pd.DataFrame(rows, columns=COLUMNS)
