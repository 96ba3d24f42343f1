"""Kedro-free comparison report: read saved model results, build the table, figures and one HTML page.

- :mod:`.results`: find Kedro versions on disk and load each model's latest (or pinned) results.
- :mod:`.table`: the comparison table (one row per model, the seed report's numbers beside ours).
- :mod:`.figures`: matplotlib figures (all ROC curves, histograms, confusion matrices, gallery)
  and heatmap overlays shared with the inference pipeline.
- :mod:`.html`: the self-contained HTML report (figures inlined as base64 PNG).
"""

from .figures import overlay_heatmap, map_display_range
from .html import build_html_report
from .results import ModelResult, latest_version, list_versions, load_model_result
from .table import comparison_table

__all__ = [
    "ModelResult",
    "build_html_report",
    "comparison_table",
    "latest_version",
    "list_versions",
    "load_model_result",
    "map_display_range",
    "overlay_heatmap",
]
