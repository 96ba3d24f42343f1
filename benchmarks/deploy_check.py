"""Served and Spark-batch scores vs `kedro run --pipeline=inference`, on every test board (default: the real set).

Needs a registered model (`kedro run --pipeline=patchcore` in this project registers
wood-anomaly-patchcore). Steps, each timed and printed:

1. the test boards (``<images>/*/*``) as one flat folder of links, ``<defect_type>_<file>``;
2. ``kedro run --pipeline=inference`` on it (the reference scores);
3. ``mlflow models serve`` of ``models:/wood-anomaly-<model>/latest`` (as ``make serve``), every board
   sent in 16-image requests: max relative score difference and verdict mismatches;
4. with ``--spark``: ``kedro run --pipeline=batch_scoring`` on ``local[2]`` (a temporary conf env),
   its wall time, and the same comparison on its Parquet output.

    python benchmarks/deploy_check.py --spark                # real set, patchcore
    python benchmarks/deploy_check.py --images data/01_raw/wood/test --model padim
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_load import ROOT, SUFFIXES, free_port, start_server  # noqa: E402


def kedro(*args: str, env: str | None = None) -> float:
    bin_dir = Path(sys.executable).parent
    command = [str(bin_dir / "kedro"), "run", *args] + ([f"--env={env}"] if env else [])
    start = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, env={**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"},
                            capture_output=True, text=True)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return wall


def newest(folder: Path, name: str) -> Path:
    version = sorted(p.name for p in folder.iterdir())[-1]
    return folder / version / name


def compare(what: str, scores: pd.Series, verdicts: pd.Series, reference: pd.DataFrame) -> None:
    ref = reference.loc[scores.index]
    rel = (scores - ref["score"]).abs() / ref["score"].abs().clip(lower=1e-12)
    mismatches = int((verdicts != ref["verdict"]).sum())
    print(f"{what}: {len(scores)} boards, max relative score difference {rel.max():.2e} "
          f"({'OK' if rel.max() <= 1e-4 else 'OVER 1e-4'}), verdict mismatches {mismatches}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, default=ROOT / "data/01_raw/wood/test")
    parser.add_argument("--model", default="patchcore")
    parser.add_argument("--spark", action="store_true", help="also time and check the Spark batch pipeline (local[2])")
    parser.add_argument("--master", default="local[2]")
    args = parser.parse_args()

    flat = Path(tempfile.mkdtemp(prefix="deploy-check-"))
    boards = sorted(p for p in args.images.glob("*/*") if p.suffix.lower() in SUFFIXES)
    for path in boards:
        (flat / f"{path.parent.name}_{path.name}").symlink_to(path.resolve())
    print(f"{len(boards)} boards from {args.images}")
    try:
        wall = kedro("--pipeline=inference", f"--params=inference.model={args.model},inference.images={flat}")
        reference = pd.read_csv(newest(ROOT / "data/07_model_output/inference/predictions.csv", "predictions.csv"))
        reference = reference.set_index("file")
        print(f"inference pipeline: {wall:.1f} s wall")

        port = free_port()
        server = start_server(args.model, f"sqlite:///{ROOT / 'mlflow.db'}", port)
        try:
            files = sorted(flat.iterdir())
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
            scores, verdicts = {}, {}
            start = time.perf_counter()
            for i in range(0, len(files), 16):
                chunk = files[i : i + 16]
                body = {"dataframe_split": {"columns": ["image"],
                                            "data": [[base64.b64encode(f.read_bytes()).decode()] for f in chunk]}}
                conn.request("POST", "/invocations", body=json.dumps(body), headers={"Content-Type": "application/json"})
                reply = conn.getresponse()
                payload = json.loads(reply.read())
                if reply.status != 200:
                    sys.exit(f"server answered {reply.status}: {payload}")
                for f, p in zip(chunk, payload["predictions"]):
                    scores[f.name], verdicts[f.name] = p["score"], p["verdict"]
            print(f"served: {len(files)} boards in {time.perf_counter() - start:.1f} s (16-image requests, one client)")
            compare("served vs inference", pd.Series(scores), pd.Series(verdicts), reference)
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)

        if args.spark:
            env = "deploy_check_spark"
            conf = ROOT / "conf" / env
            conf.mkdir(exist_ok=True)
            (conf / "spark.yml").write_text(f"spark.master: {args.master}\n")
            try:
                wall = kedro("--pipeline=batch_scoring", f"--params=batch.model={args.model},batch.images={flat}", env=env)
            finally:
                shutil.rmtree(conf)
            table = pd.read_parquet(newest(ROOT / "data/07_model_output/batch_scores/scores.parquet", "scores.parquet"))
            table.index = [Path(p).name for p in table["path"]]
            print(f"spark batch ({args.master}): {len(table)} boards, {wall:.1f} s wall for the whole `kedro run` "
                  f"(JVM start included), errors {int(table['error'].notna().sum())}, "
                  f"model {table['model_name'].iloc[0]} v{table['model_version'].iloc[0]}")
            compare("spark vs inference", table["score"], table["verdict"], reference)
    finally:
        shutil.rmtree(flat, ignore_errors=True)


if __name__ == "__main__":
    main()
