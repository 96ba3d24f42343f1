"""Reporting node: saved results of every model -> comparison table (CSV) + HTML report."""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd

from wood_anomaly.reporting import build_html_report, comparison_table
from wood_anomaly.reporting.confidence import paired_table, recommend_from_results

logger = logging.getLogger(__name__)


def build_comparison(model_results: dict[str, Any], reporting: dict[str, Any], *run_after: Any) -> tuple[pd.DataFrame, str]:
    """Build the comparison table and the HTML report.

    ``run_after`` are the ``<model>.metrics`` of the models trained in the same run: only there so
    that Kedro runs this node after them; the results themselves are read from disk (latest version
    of every model, including models trained in earlier runs).
    """
    results = model_results["results"]
    not_run = model_results["not_run"]
    recommendation = recommend_from_results(results)  # validation evidence and speed only, never a test label
    bootstrap = reporting.get("bootstrap") or {}
    paired = paired_table(results, n_resamples=int(bootstrap.get("n_resamples", 2000)), seed=int(bootstrap.get("seed", 0)))
    table = comparison_table(results, reporting.get("seed_report"), recommended=recommendation["model"])
    html = build_html_report(
        results,
        table,
        not_run=not_run,
        title=str(reporting.get("title", "Wood anomaly detection: model comparison")),
        gallery=reporting.get("gallery"),
        recommendation=recommendation,
        paired=paired,
    )
    if recommendation["model"]:
        logger.info("Recommended model: %s (%s)", recommendation["model"], recommendation["reason"])
    for rec in table.to_dict("records"):
        logger.info(
            "%-12s AUROC %.3f  F1@val %.3f  F1-max %.3f  (version %s)",
            rec["model"], rec["image_auroc"], rec["image_f1"], rec["f1_max"], rec["version"],
        )
    if not_run:
        logger.info("Not in the report (never run): %s", ", ".join(not_run))
    return table, html
