"""The self-contained HTML comparison report (no external files: figures are inlined PNGs)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from html import escape
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from .figures import confusion_figure, figure_to_base64, gallery_figure, histogram_figure, roc_figure, select_boards
from .results import ModelResult
from .robustness import robustness_figure, robustness_html, robustness_table

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem;color:#222;max-width:1400px}
h1{margin-bottom:.2rem} .sub{color:#666;margin-top:0}
table{border-collapse:collapse;font-size:.9rem;margin:1rem 0}
th,td{border:1px solid #ccc;padding:.3rem .55rem;text-align:right} th{background:#f3f3f3}
td.l,th.l{text-align:left} tr:nth-child(even){background:#fafafa}
.better{color:#0a7a2f;font-weight:600} .worse{color:#b3261e}
.note{color:#555;font-size:.85rem;max-width:70rem} img{max-width:100%;border:1px solid #eee}
code{background:#f3f3f3;padding:0 .25rem}
"""

#: (column, header, format) of the HTML table; seed columns are added beside F1 and AUROC.
HTML_COLUMNS: list[tuple[str, str, str]] = [
    ("image_auroc", "image AUROC", "{:.3f}"),
    ("image_f1", "F1 @ val. threshold", "{:.3f}"),
    ("threshold", "threshold", "{:.4g}"),
    ("f1_max", "F1-max (oracle)", "{:.3f}"),
    ("pixel_auroc", "pixel AUROC", "{:.3f}"),
    ("aupro", "AUPRO", "{:.3f}"),
    ("off_defect_auroc", "off-defect AUROC", "{:.3f}"),
    ("fit_seconds", "fit s", "{:.1f}"),
    ("ms_per_image", "ms / image", "{:.1f}"),
    ("weights_mb", "weights MB", "{:.1f}"),
]


def _fmt(value: Any, fmt: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "&ndash;"
    return escape(fmt.format(value))


def _compare(ours: float, seed: float) -> str:
    """Our value with a coloured arrow against the seed's."""
    if not (math.isfinite(ours) and math.isfinite(seed)):
        return _fmt(ours, "{:.3f}")
    cls = "better" if ours > seed else "worse" if ours < seed else ""
    return f'<span class="{cls}">{ours:.3f} ({ours - seed:+.3f})</span>'


def table_html(table: pd.DataFrame) -> str:
    """The comparison table, with the seed report's F1 / ROC AUC beside our F1-max / AUROC."""
    head = (
        '<tr><th class="l">model</th>'
        + "".join(f"<th>{escape(h)}</th>" for _, h, _ in HTML_COLUMNS)
        + "<th>seed F1 (oracle)</th><th>our F1-max vs seed</th><th>seed ROC AUC</th><th>our AUROC vs seed</th>"
        + '<th class="l">device</th><th class="l">backbone</th><th class="l">version</th></tr>'
    )
    rows = []
    for rec in table.to_dict("records"):
        cells = "".join(f"<td>{_fmt(rec[c], f)}</td>" for c, _, f in HTML_COLUMNS)
        rows.append(
            f'<tr><td class="l"><b>{escape(rec["model"])}</b></td>{cells}'
            f'<td>{_fmt(rec["seed_f1"], "{:.2f}")}</td><td>{_compare(rec["f1_max"], rec["seed_f1"])}</td>'
            f'<td>{_fmt(rec["seed_auroc"], "{:.2f}")}</td><td>{_compare(rec["image_auroc"], rec["seed_auroc"])}</td>'
            f'<td class="l">{escape(str(rec["device"]))}</td><td class="l">{escape(str(rec["backbone"]))}</td>'
            f'<td class="l"><code>{escape(rec["version"])}</code></td></tr>'
        )
    return f"<table>{head}{''.join(rows)}</table>"


def _img(fig: Figure, alt: str) -> str:
    return f'<img alt="{escape(alt)}" src="data:image/png;base64,{figure_to_base64(fig)}">'


def build_html_report(
    results: Sequence[ModelResult],
    table: pd.DataFrame,
    *,
    not_run: Sequence[str] = (),
    title: str = "Wood anomaly detection: model comparison",
    gallery: Mapping[str, int] | None = None,
    threshold_rule: str | None = None,
    recommendation: Mapping[str, Any] | None = None,
    paired: pd.DataFrame | None = None,
) -> str:
    """The whole report as one HTML string.

    Args:
        results: the models to show (their latest saved results), in table order.
        table: :func:`~.table.comparison_table` of ``results``.
        not_run: models without saved results (listed with the command that trains them).
        gallery: ``{"n_defect": 4, "n_good": 2}`` boards shown with every model's overlay.
        threshold_rule: how thresholds were set (defaults to the first model's metrics text).
        recommendation: :func:`~.confidence.recommend_model` output (computed from ``results`` when None).
        paired: :func:`~.confidence.paired_table` of ``results`` (computed when None).
    """
    gallery = {"n_defect": 4, "n_good": 2, **(gallery or {})}
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    rule = threshold_rule or (results[0].metrics.get("threshold_rule") if results else None) or "validation threshold"
    parts = [
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{escape(title)}</title>"
        f"<style>{STYLE}</style></head><body>",
        f"<h1>{escape(title)}</h1><p class='sub'>Generated {now}; {len(results)} model(s).</p>",
    ]
    synthetic = sorted(r.model for r in results if r.metrics.get("synthetic_data"))
    if synthetic:
        parts.append(
            "<p class='note'><b>Synthetic data:</b> " + escape(", ".join(synthetic)) + " were evaluated on the "
            "generated synthetic wood set, so their numbers say nothing about real boards and are not comparable "
            "with the seed report's (real boards). Run with <code>--params=dataset.path=&lt;your folder&gt;</code>.</p>"
        )
    if not results:
        parts.append("<p><b>No model has saved results yet.</b> Train one, e.g. <code>kedro run --pipeline=patchcore</code>.</p>")
    else:
        n_good, n_def = int(table["n_test_good"].iloc[0]), int(table["n_test_defect"].iloc[0])
        parts += [
            "<h2>Results</h2>",
            table_html(table),
            "<p class='note'>F1 is measured at each model's threshold set on <b>validation</b> good images only "
            f"({escape(str(rule))}); F1-max is the best F1 over all thresholds on the test labels (an oracle, "
            "like the seed report's F1, which picked its threshold on the test set: compare seed F1 with F1-max). "
            f"Test set of the first row: {n_good} good, {n_def} defective images. "
            "Each row reads the model's latest saved results; <i>version</i> is the Kedro version (run timestamp) "
            "of its metrics.json. Timings depend on the machine and its load. "
            "<i>off-defect AUROC</i>: the same boards told apart by each model's map read only farther than "
            "16 px from the labelled defects (0.5 = the model reacts to the defect only; higher = the defective "
            "boards differ from the good ones elsewhere too, and that part of the image AUROC is not defect "
            "finding).</p>",
        ]
        if len(set(table["n_test_good"])) > 1 or len(set(table["n_test_defect"])) > 1:
            parts.append("<p class='note worse'>The models were evaluated on different test sets: "
                         "compare rows with care.</p>")
        from .confidence import confidence_sections, paired_table, recommend_from_results

        parts += confidence_sections(
            results,
            recommendation if recommendation is not None else recommend_from_results(results),
            paired if paired is not None else paired_table(results),
            _img,
        )
        parts += [
            "<h2>ROC curves</h2>", _img(roc_figure(results), "ROC curves"),
            "<h2>Score histograms and thresholds</h2>", _img(histogram_figure(results), "score histograms"),
            "<h2>Confusion matrices (validation threshold)</h2>", _img(confusion_figure(results), "confusion matrices"),
        ]
        robust = robustness_table(results)
        if not robust.empty:
            parts += [
                "<h2>Robustness: the test boards turned, re-lit, compressed, blurred</h2>",
                "<p class='note'>Each cell: image AUROC / false alarms (share of good test boards over the model's "
                "own validation threshold) when every test image is transformed in a way that changes nothing about "
                "the wood (<code>evaluation.nuisances</code>). <i>plain</i> = untransformed. Red: AUROC more than "
                "0.01 below plain or false alarms more than 3 points above plain.</p>",
                robustness_html(robust),
                _img(robustness_figure(robust), "robustness under nuisances"),
            ]
        boards = select_boards(results, int(gallery["n_defect"]), int(gallery["n_good"]))
        if boards:
            parts += [
                "<h2>Gallery: the same boards, every model</h2>",
                "<p class='note'>Heatmaps use one colour scale per model (1st-99.9th percentile of its test maps). "
                "Titles: image score -&gt; verdict at the validation threshold; red = wrong verdict.</p>",
                _img(gallery_figure(results, boards), "heatmap gallery"),
            ]
        else:
            parts.append("<p class='note'>No board was scored by every model: gallery left out.</p>")
    if not_run:
        items = "".join(f"<li>{escape(m)}: <code>kedro run --pipeline={escape(m)}</code></li>" for m in not_run)
        parts.append(f"<h2>Not run yet</h2><ul>{items}</ul>")
    parts.append("</body></html>")
    return "\n".join(parts)
