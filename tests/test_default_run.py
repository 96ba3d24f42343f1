"""The default `kedro run`, as a user sees it: says where it is, ends with the report and its headline
table, and prints none of the known start-up / save noise of TensorFlow, Keras, MLflow and OmegaConf."""

from __future__ import annotations

import re
from pathlib import Path

from wood_anomaly.models.registry import MODEL_NAMES

#: what the run must not print (each silenced on purpose: wood_anomaly/quiet.py, or avoided at its source)
NOISE = {
    "Keras save_format": "The `save_format` argument is deprecated",
    "Keras legacy HDF5": "This file format is considered legacy",
    "Keras shuffle of a dataset": "was passed, but will be ignored since the data `x` was provided as a tf.data.Dataset",
    "absl pre-init": "absl::InitializeLog",
    "TF oneDNN notice": "oneDNN custom operations are on",
    "TF cuda stub": "Could not find cuda drivers",
    "TF cuInit": "failed call to cuInit",
    "MLflow type hints": "Add type hints to the `predict` method",
    "OmegaConf resolver": "register_new_resolver() is deprecated",
}


def test_progress_lines_number_the_six_models(default_run):
    found = re.findall(r"\[(\d)/(\d)\] (\w+) \(", default_run.output)
    assert [(int(i), int(n)) for i, n, _ in found] == [(i, 6) for i in range(1, 7)], found
    assert sorted(m for *_, m in found) == sorted(MODEL_NAMES)


def test_run_ends_with_the_report_path_and_the_headline_table(default_run):
    tail = default_run.output[default_run.output.rindex("Comparison report:"):]
    found = re.search(r"Comparison report:\s+(.*?report\.html.*?report\.html)", tail, re.S).group(1)
    path = default_run.project / re.sub(r"\s+", "", found)  # a narrow console may wrap the path
    assert path.is_file() and path.is_relative_to(default_run.project / "data" / "08_reporting" / "comparison")
    header = next(line for line in tail.splitlines() if "AUROC" in line and "model" in line)
    assert header.split()[-6:] == ["model", "AUROC", "F1@thr", "pxAUROC", "AUPRO", "fit_s"]
    for model in MODEL_NAMES:  # one row per model, AUROC a number in [0, 1]
        row = next(line for line in tail.splitlines() if re.search(rf"\b{model}\s+\d", line))
        auroc = float(row.split(model)[1].split()[0])
        assert 0.0 <= auroc <= 1.0, row
    assert "make mlflow-ui" in tail


def test_no_known_noise(default_run):
    printed = {name: text for name, text in NOISE.items() if text in default_run.output}
    assert not printed, f"silenced messages were printed: {printed}"
    assert "Traceback" not in default_run.output
