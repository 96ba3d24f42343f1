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
    "fit_seconds",
    "ms_per_image",
    "weights_mb",
    "device",
    "backbone",
    "n_test_good",
    "n_test_defect",
    "seed_f1",
    "seed_auroc",
]


def _number(metrics: Mapping[str, Any], key: str) -> float:
    value = metrics.get(key)
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def comparison_table(
    results: Sequence[ModelResult], seed_report: Mapping[str, Mapping[str, float]] | None = None
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
                "fit_seconds": _number(m, "fit_seconds"),
                "ms_per_image": _number(m, "score_ms_per_image"),
                "weights_mb": weights_bytes / 1e6 if weights_bytes is not None else float("nan"),
                "device": str(m.get("device", "")),
                "backbone": str(m.get("backbone", "")),
                "n_test_good": int(m.get("n_test_good", int((result.scores.get("label", np.array([])) == 0).sum()))),
                "n_test_defect": int(m.get("n_test_defect", int((result.scores.get("label", np.array([])) == 1).sum()))),
                "seed_f1": float(seed.get("f1", float("nan"))),
                "seed_auroc": float(seed.get("auroc", float("nan"))),
            }
        )
    return pd.DataFrame(rows, columns=COLUMNS)
