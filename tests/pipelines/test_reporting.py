"""Reporting: one comparison (CSV + self-contained HTML) from every model's latest saved results."""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

V1, V2, V3 = "2026-01-01T10.00.00.000Z", "2026-01-02T10.00.00.000Z", "2026-01-03T10.00.00.000Z"


def versions(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if (p / path.name).exists()) if path.exists() else []


def _save(path: Path, version: str, payload: bytes) -> None:
    target = path / version / path.name
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(payload)


def save_fake_results(data: Path, model: str, version: str, dataset: Path, *, separation: float, seed: int = 0) -> dict:
    """What a model pipeline saves (metrics.json, scores.npz, weights), at one Kedro version."""
    rng = np.random.default_rng(seed)
    good = sorted((dataset / "test" / "good").iterdir())
    defect = sorted(p for d in (dataset / "test").iterdir() if d.name != "good" for p in d.iterdir())
    paths = [str(p) for p in good + defect]
    labels = np.array([0] * len(good) + [1] * len(defect))
    scores = rng.normal(0, 1, len(paths)) + separation * labels
    maps = rng.random((len(paths), 64, 64)).astype(np.float16) + scores[:, None, None].astype(np.float16)
    val_scores = rng.normal(0, 1, 12)
    from sklearn.metrics import f1_score, roc_auc_score

    from wood_anomaly.evaluation.thresholds import threshold_metrics

    # the project's own threshold rule on the saved held-out good scores (what evaluate_model writes)
    operating_point = threshold_metrics(val_scores, 0.05, scores[labels == 0], "validation split")

    metrics = {
        "model": model, "image_auroc": float(roc_auc_score(labels, scores)),
        "image_f1": float(f1_score(labels, scores > operating_point["threshold"])),
        "f1_max": 0.9, "pixel_auroc": 0.8, "aupro": 0.6, "fit_seconds": 1.5, "score_ms_per_image": 12.0,
        "n_train": 9, "n_val": 12, "n_test_good": len(good), "n_test_defect": len(defect), "device": "cpu",
        "backbone": "fake",
        "image_auroc_ci95": [0.5, 1.0], "image_f1_ci95": [0.4, 0.6], "pixel_auroc_ci95": [0.7, 0.9],
        "aupro_ci95": [0.5, 0.7], **operating_point,
        "tpr_at_far": {"0.01": {"tpr": 0.5, "ci95": [0.2, 0.8]}, "0.05": {"tpr": 0.5, "ci95": [0.2, 0.8]},
                       "0.1": {"tpr": 0.6, "ci95": [0.3, 0.9]}},
        # label-free validation evidence: patchcore clearly ahead of padim
        "validation": {"image_auroc": 0.6 + 0.1 * separation, "image_auroc_ci95": [0.5 + 0.1 * separation, 1.0],
                       "n_good": 12, "n_defect": 12},
    }
    _save(data / "08_reporting" / model / "metrics.json", version, json.dumps(metrics).encode())
    buffer = io.BytesIO()
    np.savez(buffer, path=np.array(paths), label=labels, defect_type=np.array(["good"] * len(good) + ["x"] * len(defect)),
             scores=scores.astype(np.float32), maps=maps, val_path=np.array(["v"] * 12), val_scores=val_scores.astype(np.float32),
             score_ms_per_image=np.float32(12.0))
    _save(data / "07_model_output" / model / "scores.npz", version, buffer.getvalue())
    _save(data / "06_models" / model / "state.pt", version, b"\0" * 2_000_000)
    _save(data / "06_models" / model / "training_summary.json", version, b"{}")
    return metrics


@pytest.fixture
def saved_results(kedro_project: Path, tiny_dataset: Path) -> dict:
    """patchcore saved twice (V1 then V3), padim once (V2); the other models never run."""
    data = kedro_project / "data"
    save_fake_results(data, "patchcore", V1, tiny_dataset, separation=0.0, seed=1)
    latest = save_fake_results(data, "patchcore", V3, tiny_dataset, separation=4.0, seed=2)
    padim = save_fake_results(data, "padim", V2, tiny_dataset, separation=2.0, seed=3)
    return {"patchcore": latest, "padim": padim}


def _report_files(project: Path) -> tuple[pd.DataFrame, str]:
    folder = project / "data/08_reporting/comparison"
    (csv,) = versions(folder / "comparison.csv")
    (html,) = versions(folder / "report.html")
    return pd.read_csv(csv / "comparison.csv"), (html / "report.html").read_text()


def test_report_reads_latest_results_and_skips_models_never_run(kedro_project, saved_results, run_kedro):
    run_kedro(kedro_project, "reporting", {})
    table, html = _report_files(kedro_project)

    assert table["model"].tolist() == ["patchcore", "padim"]  # report order, never-run models skipped
    assert table["version"].tolist() == [V3, V2]  # the LATEST version of each model
    for column in ["image_auroc", "image_f1", "threshold", "f1_max", "pixel_auroc", "aupro", "fit_seconds",
                   "ms_per_image", "weights_mb", "device", "seed_f1", "seed_auroc"]:
        assert column in table.columns, column
    row = table.set_index("model").loc["patchcore"]
    assert row["image_auroc"] == pytest.approx(saved_results["patchcore"]["image_auroc"], rel=1e-5)
    assert row["threshold"] == pytest.approx(saved_results["patchcore"]["threshold"], rel=1e-5)
    assert row["weights_mb"] == pytest.approx(2.0)  # state.pt only, not the training summary
    assert (row["seed_f1"], row["seed_auroc"]) == (0.84, 0.89)  # anchors.md section 1
    assert table.set_index("model").loc["padim", "seed_f1"] == 0.89

    # One self-contained page: every image inlined (valid PNGs), nothing fetched from elsewhere.
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    assert len(images) == 6  # intervals, missed defects, ROC, histograms, confusion matrices, gallery
    assert all(base64.b64decode(b)[:8] == b"\x89PNG\r\n\x1a\n" for b in images)
    assert not re.search(r'(src|href)="(?!data:)', html)
    assert V3 in html and V2 in html and V1 not in html
    assert "0.84" in html and "0.89" in html  # seed numbers beside ours
    for never_run in ["efficientad", "autoencoder", "vae", "ganomaly"]:
        assert f"kedro run --pipeline={never_run}" in html

    # The report and the CSV are logged to MLflow.
    import mlflow

    client = mlflow.tracking.MlflowClient(tracking_uri=f"sqlite:///{kedro_project / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("wood_anomaly").experiment_id])
    logged = {a.path for a in client.list_artifacts(run.info.run_id, "comparison")}
    assert logged == {"comparison/comparison.csv", "comparison/report.html"}

    # intervals, operating point, paired comparison, validation vs test, recommendation (validation only)
    for column in ["image_auroc_ci95_low", "image_auroc_ci95_high", "aupro_ci95_high", "test_false_alarm_rate",
                   "n_threshold_scores", "tpr_at_far_0.05", "validation_image_auroc", "recommended"]:
        assert column in table.columns, column
    assert table.set_index("model")["recommended"].to_dict() == {"patchcore": True, "padim": False}
    assert row["image_auroc_ci95_low"] == 0.5 and row["image_auroc_ci95_high"] == 1.0
    for section in ["Recommended model", "Operating point", "95% intervals", "Paired comparison",
                    "How well does validation predict test?", "Kendall", "Defects missed at the threshold"]:
        assert section in html, section
    assert run.data.tags.get("recommended_model") == "patchcore"


def test_report_runs_again_as_a_new_version_and_honours_pinned_versions(kedro_project, saved_results, run_kedro, tmp_path):
    run_kedro(kedro_project, "reporting", {})
    catalog = kedro_project / "conf/base/catalog_reporting.yml"
    catalog.write_text(catalog.read_text().replace("versions: {}", f"versions: {{patchcore: '{V1}'}}"))
    run_kedro(kedro_project, "reporting", {})
    folder = kedro_project / "data/08_reporting/comparison/comparison.csv"
    first, second = (pd.read_csv(v / "comparison.csv") for v in versions(folder))
    assert first["version"].tolist() == [V3, V2]
    assert second["version"].tolist() == [V1, V2]
    assert second.loc[0, "image_auroc"] != first.loc[0, "image_auroc"]


def test_pinned_version_that_does_not_exist_is_a_clear_error(kedro_project, saved_results, run_kedro):
    catalog = kedro_project / "conf/base/catalog_reporting.yml"
    catalog.write_text(catalog.read_text().replace("versions: {}", "versions: {padim: 2020-01-01T00.00.00.000Z}"))
    with pytest.raises(Exception, match=r"padim: no metrics saved at version '2020-01-01T00.00.00.000Z'.*" + re.escape(V2)):
        run_kedro(kedro_project, "reporting", {})


def test_report_without_any_trained_model_says_so(kedro_project, run_kedro):
    run_kedro(kedro_project, "reporting", {})
    table, html = _report_files(kedro_project)
    assert table.empty and "image_auroc" in table.columns
    assert "No model has saved results yet" in html and "kedro run --pipeline=patchcore" in html


def test_default_pipeline_builds_the_report_after_every_model():
    """`kedro run` must evaluate every model before the report reads their results from disk."""
    from wood_anomaly.hooks import models_in
    from wood_anomaly.pipeline_registry import register_pipelines

    default = register_pipelines()["__default__"]
    names = [n.name for n in default.nodes]  # topologically sorted: the order a sequential run uses
    assert "reporting.build_comparison" in names
    models = models_in(default.nodes)
    assert models, "no model pipeline registered"
    report = names.index("reporting.build_comparison")
    for model in models:
        assert names.index(f"{model}.evaluate") < report, model
        assert f"{model}.metrics" in default.only_nodes("reporting.build_comparison").inputs()


def test_report_has_a_robustness_table_and_chart_when_models_measured_nuisances(tmp_path):
    from PIL import Image

    from wood_anomaly.reporting import ModelResult, build_html_report, comparison_table
    from wood_anomaly.reporting.robustness import robustness_html, robustness_table

    def result(model: str, robustness: dict | None) -> ModelResult:
        labels = np.array([0, 0, 1, 1])
        metrics = {"model": model, "image_auroc": 1.0, "threshold": 0.5, "n_test_good": 2, "n_test_defect": 2}
        if robustness is not None:
            metrics["robustness"] = robustness
        paths = []
        for name in "abcd":
            Image.fromarray(np.full((8, 8, 3), 120, np.uint8)).save(tmp_path / f"{name}.png")
            paths.append(str(tmp_path / f"{name}.png"))
        scores = {"label": labels, "scores": np.array([0.1, 0.2, 0.8, 0.9]), "path": np.array(paths),
                  "maps": np.zeros((4, 8, 8), np.float16)}
        return ModelResult(model=model, version=V1, metrics=metrics, scores=scores, scores_version=V1)

    entry = lambda auc, fa: {"image_auroc": auc, "pixel_auroc": 0.9, "false_alarm_rate": fa}  # noqa: E731
    results = [
        result("patchcore", {"plain": entry(0.96, 0.04), "hflip": entry(0.87, 0.29), "jpeg": entry(0.955, 0.05)}),
        result("padim", {"plain": entry(0.95, 0.08), "hflip": entry(0.95, 0.09), "jpeg": entry(0.95, 0.08)}),
        result("vae", None),  # evaluated without nuisances: not in the robustness table
    ]
    table = robustness_table(results)
    assert table["model"].unique().tolist() == ["patchcore", "padim"]
    assert table[table["model"] == "patchcore"]["nuisance"].tolist() == ["plain", "hflip", "jpeg"]
    cells = robustness_html(table)
    assert "0.870 / 29.0%" in cells and cells.count('class="worse"') == 1  # only PatchCore under hflip
    html = build_html_report(results, comparison_table(results))
    assert "Robustness" in html and "0.950 / 9.0%" in html
    assert len(re.findall(r'src="data:image/png;base64,', html)) == 7  # + the robustness chart
    assert robustness_html(robustness_table([results[2]])) == ""


def _result(model: str, labels, scores, validation: dict | None, ms: float = 10.0):
    from wood_anomaly.reporting import ModelResult

    metrics = {"model": model, "image_auroc": 0.9, "threshold": 0.5, "score_ms_per_image": ms}
    if validation is not None:
        metrics["validation"] = validation
    paths = np.array([f"/x/{i}.png" for i in range(len(labels))])
    return ModelResult(model=model, version=V1, metrics=metrics, scores_version=V1,
                       scores={"label": np.asarray(labels), "scores": np.asarray(scores, float), "path": paths,
                               "maps": np.zeros((len(labels), 4, 4), np.float16)})


def test_recommendation_never_reads_test_labels_and_breaks_ties_by_speed():
    from wood_anomaly.reporting.confidence import recommend_from_results, recommend_model

    rng = np.random.default_rng(0)
    labels = np.r_[np.zeros(20, int), np.ones(20, int)]
    scores = {m: rng.normal(size=40) + k * labels for m, k in (("a", 3.0), ("b", 0.5), ("c", 0.0))}
    validation = {"a": {"image_auroc": 0.95, "image_auroc_ci95": [0.90, 0.99]},
                  "b": {"image_auroc": 0.93, "image_auroc_ci95": [0.85, 0.98]},  # inside a's interval: tied
                  "c": {"image_auroc": 0.80, "image_auroc_ci95": [0.70, 0.90]}}
    speed = {"a": 50.0, "b": 5.0, "c": 1.0}
    results = [_result(m, labels, scores[m], validation[m], speed[m]) for m in "abc"]
    choice = recommend_from_results(results)
    assert choice["model"] == "b" and choice["tied"] == ["a", "b"] and choice["runner_up"] == "a"
    # permuting (or flipping) the test labels and scores changes nothing: the rule never reads them
    for permuted in (rng.permutation(labels), 1 - labels):
        shuffled = [_result(m, permuted, rng.permutation(scores[m]), validation[m], speed[m]) for m in "abc"]
        assert recommend_from_results(shuffled) == choice
    # the rule's own inputs: validation evidence and speed (and optional label-free robustness) only
    import inspect

    assert list(inspect.signature(recommend_model).parameters) == ["validation", "ms_per_image", "robustness"]
    # a clear validation leader wins whatever the speed; robustness decides among tied models
    assert recommend_model({"a": {"image_auroc": 0.99, "image_auroc_ci95": [0.98, 1.0]}, "b": validation["b"]}, speed)["model"] == "a"
    assert recommend_model(validation, speed, robustness={"a": 0.05, "b": 0.30})["model"] == "a"
    assert recommend_model({}, speed)["model"] is None


def test_validation_vs_test_ranking_agreement():
    from wood_anomaly.reporting.confidence import validation_vs_test

    labels = np.r_[np.zeros(5, int), np.ones(5, int)]
    results = []
    for m, v, t in (("a", 0.99, 0.97), ("b", 0.95, 0.93), ("c", 0.90, 0.95)):
        r = _result(m, labels, labels, {"image_auroc": v, "image_auroc_ci95": [v - 0.02, v + 0.01]})
        r.metrics["image_auroc"] = t
        results.append(r)
    frame, summary = validation_vs_test(results)
    assert frame["validation_rank"].tolist() == [1, 2, 3] and frame["test_rank"].tolist() == [1, 3, 2]
    assert summary["same_best"] and summary["kendall_tau"] == pytest.approx(1 / 3)
