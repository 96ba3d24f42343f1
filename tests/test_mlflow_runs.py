"""MLflow: every model's run carries the same metric names and a tag model=<name>, read back with MLflow's client.

One `kedro run` that trains two models makes one parent run (kedro-mlflow's) and one child run per
model (hooks.ModelRunTagsHook), so the MLflow UI compares the models side by side.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

#: two cheap models with tiny settings for one two-model run.
TINY: dict[str, dict[str, Any]] = {
    "patchcore": {"model": {"coreset_ratio": 0.25}},
    "padim": {"model": {"image_size": 64, "n_features": 16}},
}
#: metric names every model's run must carry (the comparison columns).
COMPARABLE = {"image_auroc", "image_f1", "threshold", "f1_max", "pixel_auroc", "aupro", "fit_seconds", "score_ms_per_image"}
MODELS = list(TINY)


def run_pipelines(project: Path, names: list[str], params: dict[str, Any]) -> None:
    """`kedro run --pipeline=a --pipeline=b ...` in-process: ONE kedro run (one kedro-mlflow run)."""
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    bootstrap_project(project)
    with KedroSession.create(project_path=project, runtime_params=params) as session:
        session.run(pipeline_names=names)


def latest_metrics(project: Path, model: str) -> tuple[str, dict[str, Any]]:
    folder = project / "data/08_reporting" / model / "metrics.json"
    version = sorted(p.name for p in folder.iterdir())[-1]
    return version, json.loads((folder / version / "metrics.json").read_text())


def test_two_models_in_one_run_get_comparable_child_runs_and_one_report(kedro_project, tiny_dataset):
    import mlflow
    from mlflow.tracking import MlflowClient

    params = {"dataset": {"path": str(tiny_dataset), "image_size": 64}, "evaluation": {"n_overlays": 2},
              **{m: TINY[m] for m in MODELS}}
    run_pipelines(kedro_project, MODELS, params)
    assert mlflow.active_run() is None  # the kedro run left no MLflow run open behind it

    client = MlflowClient(tracking_uri=f"sqlite:///{kedro_project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("wood_anomaly")
    runs = client.search_runs([experiment.experiment_id])
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert parent.data.tags["models"] == ",".join(MODELS) and "model" not in parent.data.tags
    assert not COMPARABLE & set(parent.data.metrics)  # no model's metrics mixed into the parent

    metric_names = []
    for model in MODELS:
        (child,) = client.search_runs([experiment.experiment_id], filter_string=f"tags.model = '{model}'")
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert child.info.run_name == model and child.info.status == "FINISHED"
        _, saved = latest_metrics(kedro_project, model)
        for name in COMPARABLE:  # plain names, equal to the model's metrics.json
            assert child.data.metrics[name] == pytest.approx(float(saved[name]), rel=1e-6), (model, name)
        metric_names.append({k for k in child.data.metrics if not k.startswith("history_")})
        assert child.data.params["runtime.seed"] == "0"
        assert any(k.startswith(f"{model}.model") for k in child.data.params), child.data.params
        artifacts = {a.path for a in client.list_artifacts(child.info.run_id, model)}
        assert f"{model}/model" in artifacts and f"{model}/metrics.json" in artifacts
        # ... and the model is registered from its own child run (wood_anomaly.serving), threshold as saved
        (registered,) = client.search_model_versions(f"name = 'wood-anomaly-{model}'")
        assert registered.run_id == child.info.run_id
        assert float(registered.tags["threshold"]) == pytest.approx(float(saved["threshold"]), rel=1e-8)
    assert metric_names[0] == metric_names[1]  # the same metric names: side by side in the MLflow UI

    # The comparison report reads both models' saved results (a later, separate `kedro run --pipeline=reporting`).
    run_pipelines(kedro_project, ["reporting"], {})
    import pandas as pd

    folder = kedro_project / "data/08_reporting/comparison/comparison.csv"
    (version,) = [p.name for p in folder.iterdir()]
    table = pd.read_csv(folder / version / "comparison.csv")
    assert table["model"].tolist() == MODELS
    for model in MODELS:
        saved_version, saved = latest_metrics(kedro_project, model)
        row = table.set_index("model").loc[model]
        assert row["version"] == saved_version and row["image_auroc"] == pytest.approx(saved["image_auroc"], rel=1e-5)
        assert row["weights_mb"] > 0
    report_run = client.search_runs([experiment.experiment_id], filter_string="tags.models = 'none'")
    assert {a.path for a in client.list_artifacts(report_run[0].info.run_id, "comparison")} == {
        "comparison/comparison.csv", "comparison/report.html"}
