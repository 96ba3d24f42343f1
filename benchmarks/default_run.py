"""Time the default `kedro run` (all six models, nuisance evaluation, report) node by node.

    .venv/bin/python benchmarks/default_run.py                 # runs `kedro run` in a fresh clone of this repo
    .venv/bin/python benchmarks/default_run.py --log run.log   # only reads the log of a finished run

Without ``--log`` it clones the repository (``git clone``, committed state) into ``--workdir``, runs
``kedro run`` there with this venv (``PYTHONPATH`` = the clone's ``src``: the clone's code, nothing
installed), and keeps the log. Prints the wall seconds of the run, each node's seconds (from Kedro's
"Completed node" log lines, 1 s resolution), the seconds per model (train + score + evaluate +
register), the comparison table the run ended with, and per model its headline metrics and robustness
table (image AUROC / false alarms, plain and under each nuisance; read from the newest ``metrics.json``
beside the log), as one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STAMP = re.compile(r"^\[(\d\d/\d\d/\d\d \d\d:\d\d:\d\d)\]")
COMPLETED = re.compile(r"Completed node: (\S*)")
TOTAL = re.compile(r"successfully in ([\d.]+) sec")


def node_seconds(log: str) -> tuple[dict[str, float], float | None]:
    """{node name: seconds since the previous completed node} (Kedro's sequential runner), pipeline seconds."""
    stamp = None
    previous = None
    out: dict[str, float] = {}
    for line in log.splitlines():
        found = STAMP.match(line)
        if found:
            stamp = datetime.strptime(found.group(1), "%m/%d/%y %H:%M:%S")
            if previous is None:
                previous = stamp
        done = COMPLETED.search(line)
        if done and stamp is not None and previous is not None:
            name = done.group(1) or "(name wrapped in the log)"  # Rich wraps long names onto the next line
            out[name] = out.get(name, 0.0) + (stamp - previous).total_seconds()
            previous = stamp
    total = TOTAL.search(log)
    return out, float(total.group(1)) if total else None


def per_model(nodes: dict[str, float]) -> dict[str, float]:
    grouped: dict[str, float] = defaultdict(float)
    for name, seconds in nodes.items():
        grouped[name.split(".")[0] if "." in name else "shared"] += seconds
    return dict(grouped)


def run_metrics(project: Path) -> dict[str, dict]:
    """Per model, from the newest metrics.json under ``project``: the headline numbers and the robustness
    table (image AUROC / false-alarm rate, plain and under every nuisance)."""
    out: dict[str, dict] = {}
    for path in sorted(project.glob("data/08_reporting/*/metrics.json/*/metrics.json")):
        metrics = json.loads(path.read_text())
        model = path.parts[-4]
        out[model] = {  # sorted paths: the newest version of each model wins
            **{k: metrics.get(k) for k in ("image_auroc", "image_auroc_ci95", "image_f1", "test_false_alarm_rate",
                                           "f1_max", "pixel_auroc", "aupro", "fit_seconds", "score_ms_per_image")},
            "robustness": {name: f"{entry['image_auroc']:.3f} / {100 * entry['false_alarm_rate']:.1f}%"
                           for name, entry in (metrics.get("robustness") or {}).items()},
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--log", type=Path, help="read this finished run's log instead of running")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/wood-default-run"))
    args = ap.parse_args()
    wall = None
    if args.log is None:
        if args.workdir.exists():
            sys.exit(f"{args.workdir} exists: remove it or give another --workdir")
        subprocess.run(["git", "clone", "-q", str(REPO), str(args.workdir)], check=True)
        env = {**os.environ, "PYTHONPATH": str(args.workdir / "src"), "KEDRO_DISABLE_TELEMETRY": "1",
               "TF_CPP_MIN_LOG_LEVEL": "2", "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
        args.log = args.workdir / "run.log"
        start = time.perf_counter()
        with args.log.open("w") as out:
            rc = subprocess.run([str(Path(sys.executable).parent / "kedro"), "run"], cwd=args.workdir, env=env,
                                stdout=out, stderr=subprocess.STDOUT).returncode
        wall = time.perf_counter() - start
        if rc:
            sys.exit(f"kedro run failed (exit {rc}); see {args.log}")
    log = args.log.read_text(errors="replace")
    nodes, pipeline_s = node_seconds(log)
    report = re.findall(r"Comparison report:.*", log, flags=re.S)
    print(json.dumps({
        "wall_s": None if wall is None else round(wall, 1),
        "pipeline_s": pipeline_s,
        "per_model_s": per_model(nodes),
        "nodes_s": nodes,
        "log": str(args.log),
        "models": run_metrics(args.log.parent),
        "report_tail": re.sub(r"\s+", " ", report[-1])[:1500] if report else None,
    }, indent=1))


if __name__ == "__main__":
    main()
