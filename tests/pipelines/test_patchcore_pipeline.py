"""End to end: `kedro run --pipeline=patchcore` on tiny generated images, outputs versioned, one MLflow run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

PARAMS = {"dataset.image_size": 64, "evaluation.n_overlays": 2, "patchcore.model.coreset_ratio": 0.25}

METRIC_KEYS = {
    "image_auroc", "image_f1", "threshold", "f1_max", "pixel_auroc", "aupro", "fit_seconds",
    "score_ms_per_image", "n_train", "n_val", "n_test_good", "n_test_defect", "device", "backbone",
}


def versions(path: Path) -> list[Path]:
    """Kedro versioned dataset: <path>/<version>/<name>."""
    return sorted(p for p in path.iterdir() if (p / path.name).exists()) if path.exists() else []


def test_patchcore_pipeline_end_to_end(kedro_project, tiny_dataset, run_kedro):
    run_kedro(kedro_project, "patchcore", {**PARAMS, "dataset.path": str(tiny_dataset)})

    data = kedro_project / "data"
    for output in [
        "02_intermediate/manifest.csv",
        "03_primary/prepared_dataset.npz",
        "06_models/patchcore/memory_bank.faiss",
        "06_models/patchcore/state.pt",
        "07_model_output/patchcore/scores.npz",
        "08_reporting/patchcore/metrics.json",
        "08_reporting/patchcore/roc_curve.png",
        "08_reporting/patchcore/score_histogram.png",
        "08_reporting/patchcore/heatmap_overlays.png",
    ]:
        assert len(versions(data / output)) == 1, output

    metrics_file = versions(data / "08_reporting/patchcore/metrics.json")[0] / "metrics.json"
    metrics = json.loads(metrics_file.read_text())
    assert METRIC_KEYS <= set(metrics)
    assert metrics["n_test_good"] == 4 and metrics["n_test_defect"] == 6
    # out-of-fold threshold: the deployed model is fitted on all 12 good boards, every one of them scored
    # by a fold model that did not see it
    assert metrics["n_train"] == 12 and metrics["n_val"] == 0 and metrics["n_threshold_scores"] == 12
    assert metrics["image_auroc"] > 0.7  # the generated defects are visible to pretrained features
    assert metrics["backbone"] == "tf_efficientnet_lite0"
    assert metrics["data_source"] == str(tiny_dataset.resolve()) and metrics["synthetic_data"] is True

    # nuisance evaluation: plain + every configured nuisance, each with the three metrics
    nuisances = ["hflip", "vflip", "rot180", "brightness_up", "brightness_down", "contrast_down", "jpeg", "blur"]
    assert list(metrics["robustness"]) == ["plain", *nuisances]
    for name, entry in metrics["robustness"].items():
        assert set(entry) == {"image_auroc", "pixel_auroc", "false_alarm_rate"}, name
        assert 0.0 <= entry["image_auroc"] <= 1.0 and 0.0 <= entry["false_alarm_rate"] <= 1.0, name
        assert 0.0 <= entry["pixel_auroc"] <= 1.0, name
    # plain, measured by the robustness code, agrees with the main metrics
    assert metrics["robustness"]["plain"]["image_auroc"] == pytest.approx(metrics["image_auroc"])
    assert metrics["robustness"]["plain"]["false_alarm_rate"] == pytest.approx(metrics["fp"] / metrics["n_test_good"])
    assert metrics["robustness"]["plain"]["pixel_auroc"] == pytest.approx(metrics["pixel_auroc"], abs=0.01)

    # One MLflow run, tagged with the model, carrying the metrics and the weights.
    import mlflow

    client = mlflow.tracking.MlflowClient(tracking_uri=f"sqlite:///{kedro_project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("wood_anomaly")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.data.tags.get("model") == "patchcore"
    assert run.data.metrics["image_auroc"] == pytest.approx(metrics["image_auroc"])
    for name in ("hflip", "jpeg"):
        for metric in ("image_auroc", "false_alarm_rate"):
            assert run.data.metrics[f"robustness.{name}.{metric}"] == pytest.approx(metrics["robustness"][name][metric])
    assert run.data.metrics["image_auroc_ci95_low"] == pytest.approx(metrics["image_auroc_ci95"][0])
    assert run.data.metrics["test_false_alarm_rate"] == pytest.approx(metrics["test_false_alarm_rate"])
    assert run.data.metrics["n_threshold_scores"] == 12
    assert "patchcore.model.coreset_ratio" in run.data.params
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "patchcore/model")}
    assert {"patchcore/model/memory_bank.faiss", "patchcore/model/state.pt"} <= artifacts


def test_second_run_adds_versions_and_failed_run_keeps_outputs(kedro_project, tiny_dataset, run_kedro, tmp_path):
    params = {**PARAMS, "dataset.path": str(tiny_dataset)}
    run_kedro(kedro_project, "patchcore", params)
    metrics_dir = kedro_project / "data/08_reporting/patchcore/metrics.json"
    first = versions(metrics_dir)
    first_bytes = (first[0] / "metrics.json").read_bytes()

    # A data set with a corrupt image: the run stops with an error naming the file ...
    broken = tmp_path / "broken"
    shutil.copytree(tiny_dataset, broken)
    victim = sorted((broken / "train" / "good").iterdir())[0]
    victim.write_bytes(b"this is not an image")
    with pytest.raises(Exception, match=victim.name):
        run_kedro(kedro_project, "patchcore", {**PARAMS, "dataset.path": str(broken)})
    # ... and nothing saved before is lost or changed.
    assert versions(metrics_dir) == first
    assert (first[0] / "metrics.json").read_bytes() == first_bytes
    assert len(versions(kedro_project / "data/03_primary/prepared_dataset.npz")) == 1

    # The same config again: a new version beside the old one, same metrics (fixed seeds).
    run_kedro(kedro_project, "patchcore", params)
    both = versions(metrics_dir)
    assert len(both) == 2 and both[0] == first[0]
    m1, m2 = (json.loads((v / "metrics.json").read_text()) for v in both)
    for key in ("image_auroc", "pixel_auroc", "threshold", "image_f1", "aupro"):
        assert m1[key] == pytest.approx(m2[key], rel=1e-6), key
