"""Evaluation (Kedro-free): metrics with the validation-only threshold rule, and figures."""

from .metrics import (
    aupro,
    evaluate,
    f1_max,
    image_metrics,
    pixel_metrics,
    predict,
    validation_threshold,
)
from .plots import (
    confusion_matrix_figure,
    heatmap_overlay_figure,
    roc_curve_figure,
    score_histogram_figure,
    select_examples,
)

__all__ = [
    "aupro",
    "confusion_matrix_figure",
    "evaluate",
    "f1_max",
    "heatmap_overlay_figure",
    "image_metrics",
    "pixel_metrics",
    "predict",
    "roc_curve_figure",
    "score_histogram_figure",
    "select_examples",
    "validation_threshold",
]
