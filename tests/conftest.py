"""Shared test fixtures: tiny generated data sets, the real data set (skipped when absent), Kedro runs in a temp project."""

from __future__ import annotations

import importlib.util
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MPLBACKEND", "Agg")

# Before any test module imports keras/tensorflow: the package loads triton first (importing triton
# after TensorFlow segfaults, see wood_anomaly/__init__.py).
import wood_anomaly  # noqa: E402,F401

REPO_ROOT = Path(__file__).resolve().parents[1]


REAL_DATA_PARTS = ("train/good", "test/good", "test/defect", "ground_truth/defect")


def real_data_problem(root: Path) -> str | None:
    """Why ``root`` is not a complete copy of the real set (None when it is)."""
    for part in REAL_DATA_PARTS:
        folder = root / part
        if not folder.is_dir() or not any(p.is_file() for p in folder.iterdir()):
            return f"{folder} is missing or empty"
    return None


def real_data_root() -> Path:
    """The real VSB wood set: $WOOD_REAL_DATA, else the copy shipped in data/01_raw/wood, else ../shared/..."""
    env = os.environ.get("WOOD_REAL_DATA")
    if env:
        return Path(env)
    shipped = REPO_ROOT / "data" / "01_raw" / "wood"
    if real_data_problem(shipped) is None:
        return shipped
    return REPO_ROOT.parent / "shared" / "datasets" / "vsb_wood_esogu"


@pytest.fixture(scope="session")
def real_data() -> Path:
    """The real set; skips (never fails) when it is absent or a partial copy."""
    root = real_data_root()
    problem = real_data_problem(root)
    if problem is not None:
        pytest.skip(f"real data set not usable at {root}: {problem} (set WOOD_REAL_DATA to run this check)")
    return root


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small generated MVTec-layout wood set (64 px) shared by the end-to-end tests (read-only)."""
    from wood_anomaly.data.synthetic import generate_synthetic_wood

    root = tmp_path_factory.mktemp("tiny") / "wood"
    generate_synthetic_wood(root, n_train=12, n_test_good=4, n_test_defect=6, image_size=64, seed=0)
    return root


def make_project(project: Path) -> Path:
    """A throw-away copy of the project's config (and Makefile) at ``project``; the package is installed."""
    project.mkdir(parents=True)
    shutil.copytree(REPO_ROOT / "conf", project / "conf", ignore=shutil.ignore_patterns("local"))
    (project / "conf" / "local").mkdir()
    for name in ("pyproject.toml", ".telemetry", "Makefile"):
        shutil.copy(REPO_ROOT / name, project / name)
    (project / "src").mkdir()  # the package itself is installed (pip install -e .)
    return project


@pytest.fixture
def kedro_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A throw-away copy of the project's config: runs write data/ and mlflow.db under tmp_path only."""
    project = make_project(tmp_path / "project")
    monkeypatch.chdir(project)
    return project


#: conf/local overrides that shrink every model of the default pipeline to seconds on tiny images.
TINY_DEFAULT_OVERRIDES: dict[str, Any] = {
    "dataset": {"image_size": 64},
    "evaluation": {"n_overlays": 2},
    "patchcore": {"model": {"coreset_ratio": 0.25}},
    "padim": {"model": {"image_size": 64, "n_features": 16}},
    "efficientad": {"model": {"image_size": 64, "steps": 4, "crop_size": 32, "aug_copies": 1}},
    "autoencoder": {"model": {"image_size": 32, "epochs": 2, "filters": [8, 8, 16]}},
    "vae": {"model": {"image_size": 32, "epochs": 2, "filters": [8, 8, 16, 16], "latent_dim": 8}},
    "ganomaly": {"model": {"image_size": 32, "epochs": 2, "base_filters": 8, "latent_dim": 8}},
}


@dataclass
class DefaultRun:
    """A finished default `kedro run` (all six models + the report) in a throw-away project."""

    project: Path
    output: str  # everything the command printed (stdout and stderr)
    seconds: float


@pytest.fixture(scope="session")
def default_run(tmp_path_factory: pytest.TempPathFactory, tiny_dataset: Path) -> DefaultRun:
    """The command a user types, `kedro run`, in a fresh project copy whose conf/local points at the tiny
    generated set and shrinks every model (TINY_DEFAULT_OVERRIDES); run once per test session."""
    import subprocess
    import sys
    import time

    import yaml

    project = make_project(tmp_path_factory.mktemp("default_run") / "project")
    overrides = {**TINY_DEFAULT_OVERRIDES, "dataset": {**TINY_DEFAULT_OVERRIDES["dataset"], "path": str(tiny_dataset)}}
    (project / "conf" / "local" / "parameters.yml").write_text(yaml.safe_dump(overrides))
    kedro = Path(sys.executable).with_name("kedro")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "TF_CPP", "WOOD_VERBOSE"))}
    env.update(KEDRO_DISABLE_TELEMETRY="1", MPLBACKEND="Agg", COLUMNS="1000")  # rich: no line wrapping
    start = time.perf_counter()
    done = subprocess.run([str(kedro), "run"], cwd=project, env=env, capture_output=True, text=True, timeout=900, check=False)
    seconds = time.perf_counter() - start
    output = done.stdout + done.stderr
    (project / "run.log").write_text(output)
    if done.returncode != 0:
        pytest.fail(f"`kedro run` failed ({done.returncode}); last output:\n{output[-6000:]}")
    return DefaultRun(project=project, output=output, seconds=seconds)


def _run_kedro(project: Path, pipeline: str, params: dict[str, Any], env: str | None = None) -> dict[str, Any]:
    """`kedro run --pipeline=<pipeline> --params=...` in `project` (in-process, like the CLI)."""
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    nested: dict[str, Any] = {}
    for dotted, value in params.items():  # like `kedro run --params=a.b=1`: dotted keys become nested dicts
        *parents, leaf = dotted.split(".")
        target = nested
        for key in parents:
            target = target.setdefault(key, {})
        target[leaf] = value
    bootstrap_project(project)
    with KedroSession.create(project_path=project, env=env, runtime_params=nested) as session:
        return session.run(pipeline_names=[pipeline])


@pytest.fixture
def run_kedro():
    """Call as run_kedro(project, "patchcore", {"dataset.path": ...})."""
    return _run_kedro


@pytest.fixture(scope="session")
def browser_tools() -> Any:
    """scripts/viz_screenshot.py as a module: find/start headless Chromium, free ports, wait for servers, render."""
    spec = importlib.util.spec_from_file_location("viz_screenshot", REPO_ROOT / "scripts" / "viz_screenshot.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def chromium(browser_tools: Any) -> str:
    """Path of the headless Chromium binary; skips where it is absent, fails in CI (env CI set)."""
    binary = browser_tools.find_chromium()
    if binary is None:
        message = "chromium not installed: make browser (apt-get install -y chromium)"
        if os.environ.get("CI"):
            pytest.fail(f"{message} (CI must install it)")
        pytest.skip(message)
    return binary
