"""Time whole `kedro run --pipeline=<model>` runs on a data set and print each model's metrics.

    .venv/bin/python benchmarks/pipeline_runs.py patchcore padim --data data/01_raw/wood

Each model runs as its own `kedro run` CLI process (as a user would run it) in a throw-away copy of the
project's conf/ (outputs and mlflow.db under --workdir, not in the repo's data/). Prints one JSON line
per model: wall seconds of the whole run plus the metrics.json it wrote.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO / "data" / "01_raw" / "wood"  # the shipped real boards
KEYS = (
    "image_auroc", "image_f1", "threshold", "f1_max", "pixel_auroc", "aupro", "fit_seconds",
    "score_ms_per_image", "n_train", "n_val", "n_test_good", "n_test_defect", "device", "backbone",
)


def make_project(workdir: Path) -> Path:
    project = workdir / "project"
    if project.exists():
        shutil.rmtree(project)
    project.mkdir(parents=True)
    shutil.copytree(REPO / "conf", project / "conf", ignore=shutil.ignore_patterns("local"))
    (project / "conf" / "local").mkdir()
    (project / "src").mkdir()
    for name in ("pyproject.toml", ".telemetry"):
        shutil.copy(REPO / name, project / name)
    return project


def latest_metrics(project: Path, model: str) -> dict:
    folder = project / "data" / "08_reporting" / model / "metrics.json"
    newest = sorted(folder.iterdir())[-1]
    return json.loads((newest / "metrics.json").read_text())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+")
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--workdir", default=None, help="where runs write (default: a temp folder)")
    parser.add_argument("--env", default=None, help="Kedro config environment, e.g. gpu")
    parser.add_argument("--params", default="", help="extra --params, e.g. patchcore.model.coreset_ratio=0.1")
    args = parser.parse_args()

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="wood-bench-"))
    project = make_project(workdir)
    kedro = str(Path(sys.executable).with_name("kedro"))
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    failures = 0
    for model in args.models:
        params = f"dataset.path={Path(args.data).resolve()}" + (f",{args.params}" if args.params else "")
        cmd = [kedro, "run", f"--pipeline={model}", f"--params={params}"] + (["--env", args.env] if args.env else [])
        log = workdir / f"{model}.log"
        start = time.perf_counter()
        with log.open("w") as out:
            code = subprocess.call(cmd, cwd=project, env=env, stdout=out, stderr=subprocess.STDOUT)
        wall = time.perf_counter() - start
        if code != 0:
            failures += 1
            print(json.dumps({"model": model, "error": f"exit {code}", "log": str(log)}), flush=True)
            continue
        metrics = latest_metrics(project, model)
        row = {"model": model, "run_seconds": round(wall, 1), **{k: metrics.get(k) for k in KEYS}}
        print(json.dumps(row), flush=True)
    print(f"outputs and logs: {workdir}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
