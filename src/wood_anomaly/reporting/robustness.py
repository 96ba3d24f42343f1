"""The report's robustness section: every model under every nuisance (image AUROC, false alarms).

Reads ``metrics["robustness"]`` (written by each model's evaluate node, see
:mod:`wood_anomaly.evaluation.robustness`); models evaluated without nuisances are left out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .results import ModelResult

ROBUSTNESS_COLUMNS = ["model", "nuisance", "image_auroc", "pixel_auroc", "false_alarm_rate"]


def robustness_table(results: Sequence[ModelResult]) -> pd.DataFrame:
    """Long table: one row per (model, nuisance), ``plain`` first, in each model's configured order."""
    rows = []
    for result in results:
        for name, entry in (result.metrics.get("robustness") or {}).items():
            rows.append({"model": result.model, "nuisance": name, **{k: float(entry.get(k, math.nan)) for k in ROBUSTNESS_COLUMNS[2:]}})
    return pd.DataFrame(rows, columns=ROBUSTNESS_COLUMNS)


def _nuisances(table: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(table["nuisance"]))


def robustness_html(table: pd.DataFrame) -> str:
    """Models x nuisances: "AUROC / false alarms"; red where AUROC drops > 0.01 below plain or false alarms
    rise > 3 points above plain."""
    if table.empty:
        return ""
    names = _nuisances(table)
    head = '<tr><th class="l">model</th>' + "".join(f"<th>{escape(n)}</th>" for n in names) + "</tr>"
    rows = []
    for model, group in table.groupby("model", sort=False):
        by_name = {r["nuisance"]: r for r in group.to_dict("records")}
        plain = by_name.get("plain")
        cells = []
        for n in names:
            r = by_name.get(n)
            if r is None or not math.isfinite(r["image_auroc"]):
                cells.append("<td>&ndash;</td>")
                continue
            worse = plain is not None and n != "plain" and (
                r["image_auroc"] < plain["image_auroc"] - 0.01 or r["false_alarm_rate"] > plain["false_alarm_rate"] + 0.03
            )
            cls = ' class="worse"' if worse else ""
            cells.append(f"<td{cls}>{r['image_auroc']:.3f} / {100 * r['false_alarm_rate']:.1f}%</td>")
        rows.append(f'<tr><td class="l"><b>{escape(str(model))}</b></td>{"".join(cells)}</tr>')
    return f"<table>{head}{''.join(rows)}</table>"


def robustness_figure(table: pd.DataFrame) -> Figure:
    """Two panels of grouped bars: image AUROC and false-alarm rate per nuisance, one bar per model."""
    fig = Figure(figsize=(12.0, 6.5), layout="constrained")
    ax_auc, ax_fa = fig.subplots(2, 1, sharex=True)
    names = _nuisances(table)
    models = list(dict.fromkeys(table["model"]))
    width = 0.8 / max(len(models), 1)
    x = np.arange(len(names))
    for i, model in enumerate(models):
        group = table[table["model"] == model].set_index("nuisance").reindex(names)
        offset = x - 0.4 + width * (i + 0.5)
        ax_auc.bar(offset, group["image_auroc"], width, label=model)
        ax_fa.bar(offset, 100 * group["false_alarm_rate"], width, label=model)
    finite = table["image_auroc"][np.isfinite(table["image_auroc"])]
    low = max(0.0, float(finite.min()) - 0.05) if len(finite) else 0.0
    ax_auc.set(ylabel="image AUROC", ylim=(low, 1.0), title="Test images under label-preserving nuisances")
    ax_fa.axhline(15, color="tab:red", ls="--", lw=1, label="15% (issue 8 target)")
    ax_fa.set(ylabel="false alarms on good boards (%)", xticks=x, xticklabels=names)
    ax_auc.legend(fontsize=8, ncol=min(len(models), 6))
    ax_fa.legend(fontsize=8, ncol=min(len(models) + 1, 7))
    return fig
