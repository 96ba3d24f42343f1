"""What the comparison report says about noise: intervals, paired differences, validation vs test, the
recommended model and the defects each model misses (Kedro-free).

The recommendation rule (:func:`recommend_model`) reads **validation evidence and speed only**, never a
test label: its inputs are, per model, the label-free validation AUROC (held-out good boards vs the same
boards with pasted synthetic defects, out of fold) with its bootstrap interval, an optional label-free
robustness figure, and the scoring time. Test numbers are shown beside the choice, never used for it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from scipy import stats

from wood_anomaly.evaluation.uncertainty import paired_auroc_differences

from .figures import load_board, map_display_range, overlay_heatmap
from .results import ModelResult

#: the headline metrics that carry a 95 % interval (``<metric>_ci95`` in metrics.json).
INTERVAL_METRICS = ("image_auroc", "image_f1", "pixel_auroc", "aupro")

RECOMMENDATION_RULE = (
    "1) the highest label-free validation AUROC (held-out good training boards vs the same boards with a pasted "
    "synthetic defect, out of fold); 2) every model whose validation AUROC lies inside the leader's 95% interval "
    "counts as tied with it; among tied models prefer the more robust (label-free validation robustness, when "
    "measured: smaller worst-case false-alarm rate under nuisances); 3) then the faster scorer (ms / image). "
    "No test label is read."
)


# ------------------------------------------------------------------------------ recommendation
def recommend_model(
    validation: Mapping[str, Mapping[str, Any]],
    ms_per_image: Mapping[str, float],
    robustness: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """The model to deploy by :data:`RECOMMENDATION_RULE`.

    Args:
        validation: ``{model: {"image_auroc": v, "image_auroc_ci95": [lo, hi]}}`` (label-free validation set).
        ms_per_image: scoring time per model.
        robustness: optional ``{model: worst false-alarm rate under nuisances on validation good boards}``.

    Returns ``{"model", "runner_up", "tied": [...], "reason", "rule"}`` (``model`` None when no model has
    validation evidence).
    """
    robustness = robustness or {}
    scored = {m: v for m, v in validation.items() if v and np.isfinite(float(v.get("image_auroc", np.nan)))}
    if not scored:
        return {"model": None, "runner_up": None, "tied": [], "reason": "no model has validation evidence",
                "rule": RECOMMENDATION_RULE}
    by_auroc = sorted(scored, key=lambda m: (-float(scored[m]["image_auroc"]), m))
    leader = by_auroc[0]
    low = float((scored[leader].get("image_auroc_ci95") or [np.nan])[0])
    tied = [m for m in by_auroc if m == leader or (np.isfinite(low) and float(scored[m]["image_auroc"]) >= low)]

    def key(m: str) -> tuple[float, float, str]:
        robust = float(robustness.get(m, np.inf)) if robustness else 0.0  # unmeasured = least robust
        return (robust, float(ms_per_image.get(m, np.inf)), m)

    ranked = sorted(tied, key=key) + [m for m in by_auroc if m not in tied]
    choice = ranked[0]
    runner_up = ranked[1] if len(ranked) > 1 else None
    if len(tied) > 1:
        reason = (f"{', '.join(tied)} are tied on validation AUROC ({leader} leads with "
                  f"{float(scored[leader]['image_auroc']):.3f}, 95% interval from {low:.3f}); "
                  f"{choice} is chosen among them for {'robustness, then ' if robustness else ''}speed "
                  f"({float(ms_per_image.get(choice, np.nan)):.1f} ms / image)")
    else:
        reason = (f"{choice} has the highest validation AUROC ({float(scored[choice]['image_auroc']):.3f}) and no other "
                  "model lies inside its 95% interval")
    return {"model": choice, "runner_up": runner_up, "tied": tied, "reason": reason, "rule": RECOMMENDATION_RULE}


def recommend_from_results(results: Sequence[ModelResult]) -> dict[str, Any]:
    """:func:`recommend_model` fed from saved results: only ``metrics["validation"]``, the label-free
    ``metrics["validation_robustness"]`` (when present) and ``score_ms_per_image`` are read."""
    validation = {r.model: dict(r.metrics.get("validation") or {}) for r in results}
    speed = {r.model: float(r.metrics.get("score_ms_per_image", np.inf)) for r in results}
    robust = {r.model: float(r.metrics["validation_robustness"]["worst_false_alarm_rate"])
              for r in results if isinstance(r.metrics.get("validation_robustness"), Mapping)
              and "worst_false_alarm_rate" in r.metrics["validation_robustness"]}
    return recommend_model(validation, speed, robust or None)


# ------------------------------------------------------------------------------ paired comparison
def aligned_scores(results: Sequence[ModelResult]) -> tuple[np.ndarray, dict[str, np.ndarray]] | None:
    """Labels and each model's scores on the test boards every model scored, in one order (None if < 2 models)."""
    if len(results) < 2:
        return None
    common = set.intersection(*(set(map(str, r.scores["path"])) for r in results))
    if not common:
        return None
    order = sorted(common)
    labels = None
    scores: dict[str, np.ndarray] = {}
    for r in results:
        index = {str(p): i for i, p in enumerate(r.scores["path"])}
        rows = np.array([index[p] for p in order])
        scores[r.model] = r.scores["scores"][rows].astype(np.float64)
        labels = r.scores["label"][rows].astype(int) if labels is None else labels
    return labels, scores


def paired_table(results: Sequence[ModelResult], n_resamples: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Paired bootstrap of every pair's test AUROC difference (same resampled boards for both models)."""
    aligned = aligned_scores(results)
    columns = ["model_a", "model_b", "auroc_a", "auroc_b", "difference", "ci95_low", "ci95_high", "significant"]
    if aligned is None:
        return pd.DataFrame(columns=columns)
    labels, scores = aligned
    return pd.DataFrame(paired_auroc_differences(labels, scores, n_resamples=n_resamples, seed=seed), columns=columns)


# ------------------------------------------------------------------------------ validation vs test
def validation_vs_test(results: Sequence[ModelResult]) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Each model's validation AUROC beside its test AUROC, their ranks, and Kendall's tau between the rankings."""
    rows = []
    for r in results:
        v = r.metrics.get("validation") or {}
        rows.append({
            "model": r.model,
            "validation_auroc": float(v.get("image_auroc", np.nan)),
            "validation_ci95": v.get("image_auroc_ci95", [np.nan, np.nan]),
            "test_auroc": float(r.metrics.get("image_auroc", np.nan)),
            "test_ci95": r.metrics.get("image_auroc_ci95", [np.nan, np.nan]),
        })
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame, {"kendall_tau": float("nan"), "p_value": float("nan"), "same_best": False, "n": 0}
    frame["validation_rank"] = frame["validation_auroc"].rank(ascending=False, method="min")
    frame["test_rank"] = frame["test_auroc"].rank(ascending=False, method="min")
    both = frame.dropna(subset=["validation_auroc", "test_auroc"])
    summary: dict[str, Any] = {"n": int(len(both)), "kendall_tau": float("nan"), "p_value": float("nan"), "same_best": False}
    if len(both) >= 2:
        tau = stats.kendalltau(both["validation_auroc"], both["test_auroc"])
        summary.update(kendall_tau=float(tau.statistic), p_value=float(tau.pvalue))
        summary["same_best"] = bool(both.loc[both["validation_auroc"].idxmax(), "model"] == both.loc[both["test_auroc"].idxmax(), "model"])
    return frame, summary


# ------------------------------------------------------------------------------ figures
def interval_figure(results: Sequence[ModelResult]) -> Figure:
    """Point estimate and 95 % interval (error bar) of each headline metric, one panel per metric."""
    fig = Figure(figsize=(3.2 * len(INTERVAL_METRICS), 3.6), layout="constrained")
    axes = fig.subplots(1, len(INTERVAL_METRICS), squeeze=False)[0]
    names = [r.model for r in results]
    y = np.arange(len(names))
    for ax, metric in zip(axes, INTERVAL_METRICS):
        values = np.array([float(r.metrics.get(metric, np.nan)) for r in results])
        ci = np.array([r.metrics.get(f"{metric}_ci95", [np.nan, np.nan]) for r in results], dtype=float)
        err = np.vstack([values - ci[:, 0], ci[:, 1] - values]) if len(results) else np.zeros((2, 0))
        ax.errorbar(values, y, xerr=np.nan_to_num(np.clip(err, 0, None)), fmt="o", capsize=4, color="tab:blue")
        ax.set_yticks(y, names if ax is axes[0] else [""] * len(names))
        ax.invert_yaxis()
        ax.set_title(metric.replace("_", " ") + " (95% CI)", fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    return fig


def missed_defects_figure(results: Sequence[ModelResult], max_per_model: int = 8) -> Figure:
    """Per model (one row): the defective test boards it scores at or below its threshold (missed), most
    confidently missed first, with the anomaly map over the board."""
    misses = []
    for r in results:
        labels, scores = r.scores["label"].astype(int), r.scores["scores"].astype(np.float64)
        idx = np.flatnonzero((labels == 1) & (scores <= r.threshold))
        misses.append(idx[np.argsort(scores[idx], kind="stable")][:max_per_model])
    cols = max([len(m) for m in misses] + [1])
    fig = Figure(figsize=(2.0 * cols, 2.3 * max(len(results), 1)), layout="constrained")
    axes = fig.subplots(max(len(results), 1), cols, squeeze=False)
    for row, (r, idx) in enumerate(zip(results, misses)):
        n_missed = int(((r.scores["label"] == 1) & (r.scores["scores"] <= r.threshold)).sum())
        n_def = int((r.scores["label"] == 1).sum())
        value_range = map_display_range(r.scores["maps"])
        for col in range(cols):
            ax = axes[row, col]
            ax.set_xticks([])
            ax.set_yticks([])
            if col >= len(idx):
                ax.set_axis_off()
                if col == 0:
                    ax.text(0.5, 0.5, f"{r.model}: no defect missed", ha="center", va="center", fontsize=9)
                continue
            i = int(idx[col])
            amap = r.scores["maps"][i].astype(np.float32)
            board = load_board(str(r.scores["path"][i]), amap.shape)
            ax.imshow(overlay_heatmap(board, amap, value_range))
            title = f"{Path(str(r.scores['path'][i])).name}\n{float(r.scores['scores'][i]):.3g} <= {r.threshold:.3g}"
            if col == 0:
                title = f"{r.model}: {n_missed}/{n_def} missed\n" + title
            ax.set_title(title, fontsize=7)
    return fig


# ------------------------------------------------------------------------------ HTML sections
def _pct(v: Any) -> str:
    try:
        v = float(v)
    except (TypeError, ValueError):
        return "&ndash;"
    return f"{100 * v:.1f}%" if np.isfinite(v) else "&ndash;"


def _num(v: Any, fmt: str = "{:.3f}") -> str:
    try:
        v = float(v)
    except (TypeError, ValueError):
        return "&ndash;"
    return fmt.format(v) if np.isfinite(v) else "&ndash;"


def _ci(ci: Any, pct: bool = False) -> str:
    if not isinstance(ci, (list, tuple)) or len(ci) != 2:
        return "&ndash;"
    f = _pct if pct else _num
    return f"[{f(ci[0])}, {f(ci[1])}]"


def confidence_sections(
    results: Sequence[ModelResult],
    recommendation: Mapping[str, Any],
    paired: pd.DataFrame,
    img: Any,
) -> list[str]:
    """HTML of the report's sections on noise and choice. ``img(fig, alt)`` inlines a figure."""
    from html import escape

    if not results:
        return []
    by_model = {r.model: r for r in results}
    parts: list[str] = []
    # -- recommended model
    choice = recommendation.get("model")
    parts.append("<h2>Recommended model</h2>")
    if choice is None:
        parts.append(f"<p class='note'>No recommendation: {escape(str(recommendation.get('reason')))}.</p>")
    else:
        r = by_model[choice]
        m = r.metrics
        runner = recommendation.get("runner_up")
        lead = ""
        if runner is not None and not paired.empty:
            row = paired[((paired.model_a == choice) & (paired.model_b == runner)) | ((paired.model_a == runner) & (paired.model_b == choice))]
            if len(row):
                row = row.iloc[0]
                sign = 1 if row.model_a == choice else -1
                d, lo, hi = sign * row.difference, *(sorted([sign * row.ci95_low, sign * row.ci95_high]))
                verdict = ("<b>within noise</b>: the interval contains 0, so the test set cannot tell the two apart"
                           if not row.significant else ("a real lead on the test set" if d > 0 else
                                                        "<b>behind</b> the runner-up on the test set (validation chose otherwise)"))
                lead = (f"<p>Against the runner-up <b>{escape(runner)}</b>: test AUROC difference {d:+.3f} "
                        f"(95% paired interval [{lo:+.3f}, {hi:+.3f}]), {verdict}.</p>")
        v = m.get("validation") or {}
        parts += [
            f"<p><b style='font-size:1.2rem'>{escape(choice)}</b> &mdash; {escape(str(recommendation.get('reason')))}.</p>",
            f"<p class='note'><b>Rule</b> (no test label is read): {escape(str(recommendation.get('rule')))}</p>",
            "<table><tr><th class='l'>evidence</th><th>value</th><th>95% interval</th></tr>"
            f"<tr><td class='l'>validation AUROC (label-free, chooses)</td><td>{_num(v.get('image_auroc'))}</td><td>{_ci(v.get('image_auroc_ci95'))}</td></tr>"
            f"<tr><td class='l'>threshold (flag score &gt; t)</td><td>{_num(m.get('threshold'), '{:.4g}')}</td><td>from {_num(m.get('n_threshold_scores'), '{:.0f}')} held-out good scores</td></tr>"
            f"<tr><td class='l'>promised / expected false alarms</td><td>{_pct(m.get('false_alarm_rate'))} / {_pct(m.get('expected_false_alarm_rate'))}</td><td>{_ci(m.get('expected_false_alarm_rate_ci95'), True)}</td></tr>"
            f"<tr><td class='l'>test: false alarms on good boards</td><td>{_pct(m.get('test_false_alarm_rate'))}</td><td>{_ci(m.get('test_false_alarm_rate_ci95'), True)}</td></tr>"
            f"<tr><td class='l'>test: image AUROC</td><td>{_num(m.get('image_auroc'))}</td><td>{_ci(m.get('image_auroc_ci95'))}</td></tr>"
            f"<tr><td class='l'>test: F1 at the threshold</td><td>{_num(m.get('image_f1'))}</td><td>{_ci(m.get('image_f1_ci95'))}</td></tr>"
            f"<tr><td class='l'>scoring time</td><td>{_num(m.get('score_ms_per_image'), '{:.1f}')} ms / image</td><td></td></tr></table>",
            lead,
        ]
    # -- operating point
    parts.append("<h2>Operating point: promised and realised false alarms, detection rates</h2>")
    head = ("<tr><th class='l'>model</th><th>threshold</th><th>n threshold scores</th><th>promised</th>"
            "<th>expected [95%]</th><th>test false alarms [95% CP]</th><th>TPR @ 1% FA</th><th>TPR @ 5% FA</th>"
            "<th>TPR @ 10% FA</th><th>missed defects</th></tr>")
    rows = []
    for r in results:
        m = r.metrics
        tpr = m.get("tpr_at_far") or {}
        cells = "".join(f"<td>{_num((tpr.get(k) or {}).get('tpr'))} {_ci((tpr.get(k) or {}).get('ci95'))}</td>" for k in ("0.01", "0.05", "0.1"))
        n_missed = int(((r.scores["label"] == 1) & (r.scores["scores"] <= r.threshold)).sum())
        far = m.get("test_false_alarm_rate")
        warn = " class='worse'" if far is not None and float(far) > 0.10 else ""
        rows.append(
            f"<tr><td class='l'><b>{escape(r.model)}</b></td><td>{_num(m.get('threshold'), '{:.4g}')}</td>"
            f"<td>{_num(m.get('n_threshold_scores'), '{:.0f}')}</td><td>{_pct(m.get('false_alarm_rate'))}</td>"
            f"<td>{_pct(m.get('expected_false_alarm_rate'))} {_ci(m.get('expected_false_alarm_rate_ci95'), True)}</td>"
            f"<td{warn}>{_pct(far)} {_ci(m.get('test_false_alarm_rate_ci95'), True)}</td>{cells}"
            f"<td>{n_missed} / {int((r.scores['label'] == 1).sum())}</td></tr>"
        )
    parts += [
        f"<table>{head}{''.join(rows)}</table>",
        "<p class='note'>Threshold: the conformal quantile of good-board scores the model never trained on "
        "(out-of-fold; docs/thresholds.md). <i>Expected</i>: the false-alarm rate this rule promises with that many "
        "scores, with the 95% interval of the rate one such threshold can land on. <i>Test false alarms</i>: false "
        "positives / good test boards (Clopper-Pearson interval). TPR @ x% FA: detection rate at the threshold that "
        "flags x% of the good test boards (read on the test set, like a ROC curve; bootstrap 95% interval).</p>",
    ]
    # -- intervals
    parts += [
        "<h2>95% intervals of the headline numbers</h2>",
        img(interval_figure(results), "metric intervals"),
        "<p class='note'>Stratified bootstrap over the test images (good and defective boards resampled separately; "
        "pixel metrics resampled by image), percentile intervals, fixed seed (same scores = same intervals).</p>",
    ]
    # -- paired comparison
    if not paired.empty:
        prow = []
        for rec in paired.to_dict("records"):
            cls = "better" if rec["significant"] else ""
            prow.append(
                f"<tr><td class='l'>{escape(rec['model_a'])} &minus; {escape(rec['model_b'])}</td>"
                f"<td>{rec['difference']:+.3f}</td><td>[{rec['ci95_low']:+.3f}, {rec['ci95_high']:+.3f}]</td>"
                f"<td class='{cls}'>{'yes' if rec['significant'] else 'no (within noise)'}</td></tr>"
            )
        n_sig = int(paired["significant"].sum())
        parts += [
            "<h2>Paired comparison (same test boards)</h2>",
            f"<p class='note'>{n_sig} of {len(paired)} pairwise AUROC differences are significant (95% paired bootstrap "
            "interval excludes 0): the other leads are within noise.</p>",
            "<table><tr><th class='l'>A &minus; B</th><th>test AUROC difference</th><th>95% paired interval</th>"
            f"<th>significant</th></tr>{''.join(prow)}</table>",
        ]
    # -- validation vs test
    frame, summary = validation_vs_test(results)
    if not frame.empty:
        vrows = "".join(
            f"<tr><td class='l'>{escape(rec['model'])}</td><td>{_num(rec['validation_auroc'])} {_ci(rec['validation_ci95'])}</td>"
            f"<td>{_num(rec['validation_rank'], '{:.0f}')}</td><td>{_num(rec['test_auroc'])} {_ci(rec['test_ci95'])}</td>"
            f"<td>{_num(rec['test_rank'], '{:.0f}')}</td></tr>"
            for rec in frame.to_dict("records")
        )
        if summary["n"] < 2:
            agree = "cannot be compared (fewer than 2 models with both numbers)"
        else:
            agree = ("agree on the best model" if summary["same_best"] else "do <b>not</b> agree on the best model")
        parts += [
            "<h2>How well does validation predict test?</h2>",
            "<table><tr><th class='l'>model</th><th>validation AUROC [95%]</th><th>val. rank</th>"
            f"<th>test AUROC [95%]</th><th>test rank</th></tr>{vrows}</table>",
            f"<p class='note'>Kendall's tau between the validation and the test ranking: {_num(summary['kendall_tau'], '{:+.2f}')} "
            f"(p = {_num(summary['p_value'], '{:.2f}')}, {summary['n']} models); validation and test {agree}. Validation = "
            "held-out good training boards vs the same boards with a pasted synthetic defect, scored out of fold. "
            "Synthetic defects are not real ones, so validation and test AUROCs are on different scales: what matters "
            "for choosing is whether the rankings agree.</p>",
        ]
    # -- missed defects
    parts += [
        "<h2>Defects missed at the threshold</h2>",
        "<p class='note'>Per model, the defective test boards scoring at or below its threshold (lowest score first, "
        "at most 8), anomaly map over the board.</p>",
        img(missed_defects_figure(results), "missed defects"),
    ]
    return parts
