"""MlflowMetricsDataset: a plain metrics dict lands in the MLflow run as kedro-mlflow would log it (same keys,
values and steps; NaN dropped; prefix applied), in batches rather than one call per value."""

from __future__ import annotations

import math

import mlflow
import pytest
from kedro.io.core import DatasetError
from mlflow.tracking import MlflowClient

from wood_anomaly.datasets.mlflow_tracking import MlflowMetricsDataset


@pytest.fixture
def tracking(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    yield MlflowClient(tracking_uri=uri)
    while mlflow.active_run():
        mlflow.end_run()


def test_metrics_dict_logged_with_steps_in_batches(tracking, monkeypatch):
    history = [1.0 / (i + 1) for i in range(1500)]  # more values than one log_batch call takes
    history[7] = math.nan
    calls = {"batch": 0, "single": 0}
    batch, single = MlflowClient.log_batch, MlflowClient.log_metric

    def counted_batch(self, *args, **kwargs):
        calls["batch"] += 1
        return batch(self, *args, **kwargs)

    def counted_single(self, *args, **kwargs):
        calls["single"] += 1
        return single(self, *args, **kwargs)

    monkeypatch.setattr(MlflowClient, "log_batch", counted_batch)
    monkeypatch.setattr(MlflowClient, "log_metric", counted_single)
    with mlflow.start_run() as run:
        MlflowMetricsDataset(prefix="").save({"image_auroc": 0.93, "loss": history, "pixel_auroc": math.nan})
        MlflowMetricsDataset(prefix="fold0").save({"loss": [3.0, 2.0]})
    assert calls == {"batch": 2 + 1, "single": 0}  # 1,500 values: two calls; then one
    logged = tracking.get_run(run.info.run_id).data.metrics
    assert set(logged) == {"image_auroc", "loss", "fold0.loss"}  # NaN-only metric dropped
    assert logged["image_auroc"] == pytest.approx(0.93)
    steps = {m.step: m.value for m in tracking.get_metric_history(run.info.run_id, "loss")}
    assert len(steps) == 1499 and 7 not in steps
    assert steps[0] == 1.0 and steps[1499] == pytest.approx(1 / 1500)
    assert [(m.step, m.value) for m in tracking.get_metric_history(run.info.run_id, "fold0.loss")] == [(0, 3.0), (1, 2.0)]


def test_explicit_run_id_and_bad_values(tracking):
    run = tracking.create_run(tracking.get_experiment_by_name("Default").experiment_id)
    MlflowMetricsDataset(prefix="", run_id=run.info.run_id).save({"f1": [0.5, 0.6]})
    assert [m.value for m in tracking.get_metric_history(run.info.run_id, "f1")] == [0.5, 0.6]
    with pytest.raises(DatasetError, match="'note' must be a number"):
        MlflowMetricsDataset(prefix="", run_id=run.info.run_id).save({"note": "high"})
