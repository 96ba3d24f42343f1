"""`kedro run --pipeline=tuning` end to end on tiny generated images (2 trials): versioned best
parameters, one MLflow child run per trial, the same study twice, and no test image read."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

PARAMS = {"dataset.image_size": 64, "tuning.model": "patchcore", "tuning.trials": 2, "tuning.n_startup_trials": 2}


def versions(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if (p / path.name).exists()) if path.exists() else []


def _best(project: Path) -> dict:
    out = versions(project / "data/08_reporting/tuning/patchcore/best_params.yml")
    assert len(out) == 1
    text = (out[0] / "best_params.yml").read_text()
    assert "&id" not in text  # plain YAML: no anchors for lists shared with the search space
    return yaml.safe_load(text)


def _poisoned_copy(src: Path, dst: Path) -> Path:
    """The same data set with every test image (and mask) replaced by bytes no decoder accepts."""
    shutil.copytree(src, dst)
    poisoned = 0
    for folder in ("test", "ground_truth"):
        for path in (dst / folder).rglob("*.png"):
            path.write_bytes(b"not an image: the tuning pipeline must never open this file")
            poisoned += 1
    assert poisoned > 0
    return dst


def test_tuning_pipeline_end_to_end_and_never_reads_a_test_image(kedro_project, tiny_dataset, run_kedro, tmp_path):
    run_kedro(kedro_project, "tuning", {**PARAMS, "dataset.path": str(tiny_dataset)})
    best = _best(kedro_project)
    space = yaml.safe_load((kedro_project / "conf/base/parameters_tuning.yml").read_text())["tuning"]["search_spaces"]
    assert best["model"] == "patchcore"
    assert set(best["best_params"]) == set(space["patchcore"])
    assert best["study"]["trials"] == 2 and best["study"]["n_train_good"] == 12
    assert -1.0 <= best["best_value"] <= 1.0 and best["best_trial"] in (0, 1)
    assert {"auroc", "nuisance_excess", "objective"} <= set(best["components"])
    assert not any(k.startswith("param.") for k in best["components"])
    trials = pd.read_csv(versions(kedro_project / "data/08_reporting/tuning/patchcore/trials.csv")[0] / "trials.csv")
    assert len(trials) == 2 and {"objective", "auroc", "nuisance_excess", "param.train_flips"} <= set(trials.columns)
    assert trials["objective"].max() == best["best_value"]
    assert len(versions(kedro_project / "data/08_reporting/tuning/patchcore/history.png")) == 1

    # MLflow: the kedro-mlflow run carries the best value; each trial is a child run with params + components
    import mlflow

    client = mlflow.tracking.MlflowClient(tracking_uri=f"sqlite:///{kedro_project / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("wood_anomaly").experiment_id])
    children = [r for r in runs if "tuning_trial" in r.data.tags]
    parents = [r for r in runs if "tuning_trial" not in r.data.tags]
    assert len(parents) == 1 and len(children) == 2
    parent = parents[0]
    assert parent.info.run_id == best["mlflow_run_id"]
    assert parent.data.metrics["tuning_best_objective"] == best["best_value"]
    for child in children:
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert {"objective", "auroc", "nuisance_excess"} <= set(child.data.metrics)
        assert set(child.data.params) == set(space["patchcore"])
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "tuning")}
    assert "tuning/best_params.yml" in artifacts

    # Every test image replaced by garbage: a second run (fresh project) reads no test file, so it
    # succeeds, and the same config gives the same study (the same trials, the same best parameters).
    poisoned = _poisoned_copy(tiny_dataset, tmp_path / "poisoned")
    second = tmp_path / "project2"
    shutil.copytree(kedro_project / "conf", second / "conf")
    for name in ("pyproject.toml", ".telemetry"):
        shutil.copy(kedro_project / name, second / name)
    (second / "src").mkdir()
    run_kedro(second, "tuning", {**PARAMS, "dataset.path": str(poisoned)})
    again = _best(second)
    assert again["best_params"] == best["best_params"]
    assert again["best_value"] == best["best_value"]


def test_load_tuning_images_returns_train_good_only(tiny_dataset):
    from wood_anomaly.pipelines.tuning.nodes import load_tuning_images

    out = load_tuning_images({"root": str(tiny_dataset), "synthetic": True}, {"image_size": 32})
    assert out["images"].shape == (12, 32, 32, 3) and out["images"].dtype == np.uint8
    assert all(Path(p).parent == tiny_dataset.resolve() / "train" / "good" for p in out["path"])
    assert set(out["split"]) == {"train"}

