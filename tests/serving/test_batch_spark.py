"""Batch scoring on Spark (local[2]): `kedro run --pipeline=batch_scoring` over a folder with one unreadable file."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import _run_kedro
from tests.serving.conftest import _cwd


def test_only_the_batch_pipeline_starts_spark():
    from wood_anomaly.hooks import SparkHooks
    from wood_anomaly.pipeline_registry import register_pipelines

    pipelines = register_pipelines()
    assert SparkHooks.needs_spark(pipelines["batch_scoring"])
    for name in ("patchcore", "inference", "reporting", "__default__"):
        assert not SparkHooks.needs_spark(pipelines[name]), name


@pytest.mark.skipif(not (shutil.which("java") or os.environ.get("JAVA_HOME")),
                    reason="Spark needs a Java runtime (17): apt-get install -y openjdk-17-jre-headless")
def test_batch_scoring_on_local2_writes_versioned_parquet_with_an_error_row(deployed, tmp_path):
    from mlflow.tracking import MlflowClient
    from pyspark.sql import SparkSession

    assert SparkSession.getActiveSession() is None  # training and inference runs started no JVM
    archive = tmp_path / "archive"
    shutil.copytree(deployed.boards, archive / "line1")
    (archive / "line2").mkdir()
    (archive / "line2" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    (archive / "line2" / "notes.txt").write_text("not an image: skipped by suffix")
    (deployed.project / "conf" / "local" / "spark.yml").write_text("spark.master: local[2]\n")
    try:
        with _cwd(deployed.project):
            _run_kedro(deployed.project, "batch_scoring", {"batch.model": "patchcore", "batch.images": str(archive)})
        spark = SparkSession.getActiveSession()
        assert spark is not None and spark.sparkContext.master == "local[2]"
    finally:
        if SparkSession.getActiveSession() is not None:
            SparkSession.getActiveSession().stop()
        (deployed.project / "conf" / "local" / "spark.yml").unlink()

    folder = deployed.project / "data/07_model_output/batch_scores/scores.parquet"
    (version,) = [p.name for p in folder.iterdir()]
    table = pd.read_parquet(folder / version / "scores.parquet")
    assert list(table.columns) == ["path", "score", "verdict", "threshold", "model_name", "model_version",
                                   "trained_version", "error"]
    table["file"] = [Path(p).name for p in table["path"]]
    assert len(table) == len(list(deployed.boards.iterdir())) + 1  # every image + the broken one, not the .txt

    broken = table.set_index("file").loc["broken.png"]
    assert broken["verdict"] == "unreadable" and np.isnan(broken["score"])
    assert "not a recognised image" in broken["error"] or "corrupt" in broken["error"]

    client = MlflowClient(tracking_uri=deployed.tracking_uri, registry_uri=deployed.tracking_uri)
    latest = max(int(v.version) for v in client.search_model_versions("name = 'wood-anomaly-patchcore'"))
    scored = table[table["file"] != "broken.png"].set_index("file")
    assert (scored["model_name"] == "wood-anomaly-patchcore").all() and (scored["model_version"] == str(latest)).all()
    assert scored["error"].isna().all()
    reference = deployed.reference.set_index("file").loc[scored.index]
    np.testing.assert_allclose(scored["score"], reference["score"], rtol=1e-4)
    assert scored["verdict"].tolist() == reference["verdict"].tolist()
    assert (scored["threshold"] == reference["threshold"]).all()
