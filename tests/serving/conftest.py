"""One tiny trained + registered PatchCore for every deployment test (registry, REST server, Spark batch).

``deployed``: a throw-away project where ``kedro run --pipeline=patchcore`` trained and registered
``wood-anomaly-patchcore`` on tiny generated boards, and ``kedro run --pipeline=inference`` scored a
flat folder of its test boards (the reference scores). ``server``: ``mlflow models serve`` of that
registered model (the command ``make serve`` runs), started once on a free localhost port.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import REPO_ROOT, _run_kedro  # noqa: F401 - the shared Kedro runner

PATCHCORE_TINY = {"patchcore.model.coreset_ratio": 0.25}


@dataclass
class Deployed:
    project: Path
    boards: Path  # flat folder of the tiny test boards
    reference: pd.DataFrame  # kedro run --pipeline=inference: file, score, verdict, threshold, ...
    tracking_uri: str


@contextmanager
def _cwd(path: Path):
    before = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


@pytest.fixture(scope="session")
def deployed(tmp_path_factory: pytest.TempPathFactory, tiny_dataset: Path) -> Deployed:
    project = tmp_path_factory.mktemp("deploy") / "project"
    project.mkdir()
    shutil.copytree(REPO_ROOT / "conf", project / "conf", ignore=shutil.ignore_patterns("local"))
    (project / "conf" / "local").mkdir()
    shutil.copy(REPO_ROOT / "pyproject.toml", project / "pyproject.toml")
    shutil.copy(REPO_ROOT / ".telemetry", project / ".telemetry")
    (project / "src").mkdir()
    boards = project.parent / "boards"
    boards.mkdir()
    for path in sorted((tiny_dataset / "test").glob("*/*.png")):
        shutil.copy(path, boards / f"{path.parent.name}_{path.name}")
    with _cwd(project):
        _run_kedro(project, "patchcore", {"dataset.path": str(tiny_dataset), "dataset.image_size": 64,
                                          "evaluation.n_overlays": 2, **PATCHCORE_TINY})
        _run_kedro(project, "inference", {"inference.model": "patchcore", "inference.images": str(boards)})
    folder = project / "data/07_model_output/inference/predictions.csv"
    (version,) = [p.name for p in folder.iterdir()]
    reference = pd.read_csv(folder / version / "predictions.csv")
    return Deployed(project, boards, reference, f"sqlite:///{project / 'mlflow.db'}")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    url: str
    process: subprocess.Popen
    log: Path


@pytest.fixture(scope="session")
def server(deployed: Deployed) -> Server:
    """`mlflow models serve -m models:/wood-anomaly-patchcore/latest --env-manager local` (as `make serve`)."""
    port = _free_port()
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
           "MLFLOW_TRACKING_URI": deployed.tracking_uri}
    log = deployed.project / "serve.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [str(bin_dir / "mlflow"), "models", "serve", "-m", "models:/wood-anomaly-patchcore/latest",
             "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)],
            cwd=deployed.project, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"mlflow models serve exited ({process.returncode}):\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{url}/ping", timeout=2) as reply:
                    if reply.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"mlflow models serve did not answer /ping in 180 s:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield Server(url, process, log)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, 15)  # its own session: uvicorn is a child of `mlflow models serve`
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, 9)
