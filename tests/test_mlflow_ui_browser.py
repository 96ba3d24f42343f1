"""`make mlflow-ui` after a finished default run, in a clean environment, checked in headless Chromium:
the UI serves, the experiment is a model-training one, and the printed link lists the six model runs.

Needs Debian's chromium (`make browser`); skipped where it is absent, except in CI (env CI set).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from wood_anomaly.models.registry import MODEL_NAMES

def clean_env() -> dict[str, str]:
    """What a fresh shell has: no venv on PATH, no MLflow variables; the package as the tests see it."""
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": os.environ.get("HOME", "/tmp"), "LANG": "C.UTF-8",
           "KEDRO_DISABLE_TELEMETRY": "1"}
    if os.environ.get("PYTHONPATH"):  # a checkout tested without installing it
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return env


@pytest.mark.timeout(900)
def test_make_mlflow_ui_lists_the_six_model_runs(default_run, chromium, browser_tools, tmp_path):
    browser = browser_tools
    if shutil.which("make") is None:
        pytest.skip("make not installed")
    venv = Path(sys.executable).parent.parent
    port = browser.free_port()
    env = clean_env()
    log_file = tmp_path / "mlflow_ui.log"
    # exactly the Makefile target (its `setup` prerequisite is this already-installed venv)
    command = ["make", "-o", "setup", "mlflow-ui", f"VENV={venv}", f"ARGS=--port {port} --host 127.0.0.1"]
    with open(log_file, "wb") as log:
        process = subprocess.Popen(command, cwd=default_run.project, stdout=log, stderr=subprocess.STDOUT, env=env,
                                   start_new_session=True)
    try:
        base = f"http://127.0.0.1:{port}"
        browser.wait_for(f"{base}/", 180, process)
        printed = log_file.read_text()
        match = re.search(r"model runs, best image AUROC first: (\S+)", printed)
        assert match, printed
        experiment_id = re.search(r"#/experiments/(\w+)/runs", match.group(1)).group(1)

        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=f"sqlite:///{default_run.project / 'mlflow.db'}")
        experiment = client.get_experiment(experiment_id)
        assert experiment.name == "wood_anomaly"
        assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
        assert "Compare the model runs" in experiment.tags["mlflow.note.content"]

        link = match.group(1).replace("http://127.0.0.1:5000", base)  # the printed link, on this test's port
        screenshot = tmp_path / "mlflow_runs.png"
        dom = browser.render(chromium, link, screenshot, budget_ms=30000)
        text = re.sub(r"<[^>]+>", " ", dom)
        assert not browser.missing_names(text, MODEL_NAMES), text[:3000]
        assert re.search(r"\b6\s+matching\s+runs\b", text), "the link must list exactly the six model runs"
        assert "Compare the model runs" in text  # the experiment description (one click from every runs page)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
