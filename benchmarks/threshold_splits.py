"""Does the threshold keep its false-alarm promise on other splits of the good boards?

Split 0 is the data set as shipped (70 train/good, 70 test/good, 71 test/defect). Split s >= 1 pools
train/good + test/good (140 boards), draws a seeded permutation (numpy default_rng(s)) and writes a
temporary MVTec folder (symlinks) with 70 of them as train/good and the other 70 as test/good; the
defects and masks are the same. Every model runs through ``kedro run --pipeline=<model>`` (conf/base,
in a throw-away copy of the project config, so nothing here touches data/ or mlflow.db), and the
script prints, per split and model, the realised false-alarm rate on the 70 good test boards (with
its Clopper-Pearson interval), the promised / expected rate, image AUROC and F1 at the threshold with
their bootstrap 95 % intervals, and the paired AUROC differences between the models of a split.

    .venv/bin/python benchmarks/threshold_splits.py --models patchcore padim --splits 0 1 2 3
    .venv/bin/python benchmarks/threshold_splits.py --models autoencoder --splits 1

Results are appended as JSON lines to --out (default /tmp/threshold_splits.jsonl) so several calls
add up; --table prints the markdown table of everything in --out.
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

import numpy as np

REPO = Path(__file__).resolve().parents[1]
#: the shipped real set (data/01_raw/wood), else ../shared next to the repository
DEFAULT_DATA = next((p for p in (REPO / "data" / "01_raw" / "wood", REPO.parent / "shared" / "datasets" / "vsb_wood_esogu")
                     if (p / "train" / "good").is_dir()), REPO / "data" / "01_raw" / "wood")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def make_split(data: Path, split: int, root: Path) -> Path:
    """The MVTec folder of ``split`` (0 = ``data`` itself) under ``root``."""
    if split == 0:
        return data
    goods = [(p, f"tr_{p.name}") for p in _images(data / "train" / "good")] + [
        (p, f"te_{p.name}") for p in _images(data / "test" / "good")
    ]
    order = np.random.default_rng(split).permutation(len(goods))
    n_train = len(_images(data / "train" / "good"))
    out = root / f"split{split}"
    for sub in ("train/good", "test/good"):
        (out / sub).mkdir(parents=True)
    for rank, index in enumerate(order):
        source, name = goods[index]
        (out / ("train/good" if rank < n_train else "test/good") / name).symlink_to(source.resolve())
    for entry in (data / "test").iterdir():
        if entry.name != "good":
            (out / "test" / entry.name).symlink_to(entry.resolve())
    if (data / "ground_truth").exists():
        (out / "ground_truth").symlink_to((data / "ground_truth").resolve())
    return out


def empty_in_conf(conf: Path, dotted: str) -> None:
    """Set ``dotted`` (e.g. ``evaluation.nuisances``) to ``{}`` in the copied conf/base parameter files
    (``kedro run --params`` merges a ``{}`` into the existing dict, so it cannot empty one)."""
    import yaml

    *parents, leaf = dotted.split(".")
    for path in sorted((conf / "base").glob("parameters*.yml")):
        data = yaml.safe_load(path.read_text()) or {}
        node = data
        for key in parents:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict) and leaf in node:
            node[leaf] = {}
            path.write_text(yaml.safe_dump(data, sort_keys=False))


def make_project(root: Path, empty: list[str] = ()) -> Path:
    project = root / "project"
    project.mkdir()
    shutil.copytree(REPO / "conf", project / "conf", ignore=shutil.ignore_patterns("local"))
    for dotted in empty:
        empty_in_conf(project / "conf", dotted)
    (project / "conf" / "local").mkdir()
    for name in ("pyproject.toml", ".telemetry"):
        if (REPO / name).exists():
            shutil.copy(REPO / name, project / name)
    (project / "src").mkdir()
    return project


def latest(path: Path) -> Path:
    versions = sorted(p for p in path.iterdir() if (p / path.name).exists())
    return versions[-1] / path.name


def run_model(project: Path, model: str, dataset: Path, extra: list[str]) -> tuple[dict, dict, float]:
    params = ",".join([f"dataset.path={dataset}", *extra])
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    kedro = Path(sys.executable).parent / "kedro"
    start = time.perf_counter()
    done = subprocess.run([str(kedro), "run", f"--pipeline={model}", f"--params={params}"], cwd=project, env=env,
                          capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode:
        sys.stderr.write(done.stdout[-3000:] + done.stderr[-5000:])
        raise SystemExit(f"kedro run --pipeline={model} failed on {dataset}")
    metrics = json.loads(latest(project / "data" / "08_reporting" / model / "metrics.json").read_text())
    scores = dict(np.load(latest(project / "data" / "07_model_output" / model / "scores.npz")))
    return metrics, scores, seconds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["patchcore", "padim"])
    parser.add_argument("--splits", nargs="+", type=int, default=[0, 1, 2, 3])
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("WOOD_REAL_DATA", DEFAULT_DATA)))
    parser.add_argument("--param", action="append", default=[], help="extra kedro --params entry, e.g. runtime.num_threads=2")
    parser.add_argument("--out", type=Path, default=Path("/tmp/threshold_splits.jsonl"))
    parser.add_argument("--table", action="store_true", help="only print the markdown table of --out")
    args = parser.parse_args(argv)
    if not args.table and not (args.data / "train" / "good").is_dir():
        # a missing dataset.path would make the pipeline generate a SYNTHETIC set: never benchmark that by accident
        raise SystemExit(f"{args.data}: no train/good folder (give --data or set WOOD_REAL_DATA)")
    empty = [p.split("=")[0] for p in args.param if p.endswith("={}")]  # e.g. evaluation.nuisances={}: no nuisance scoring
    args.param = [p for p in args.param if not p.endswith("={}")]
    if not args.table:
        from wood_anomaly.evaluation.uncertainty import paired_auroc_differences

        with tempfile.TemporaryDirectory(prefix="threshold_splits_") as tmp:
            root = Path(tmp)
            for split in args.splits:
                dataset = make_split(args.data, split, root)
                (root / f"p{split}").mkdir()
                project = make_project(root / f"p{split}", empty)
                scores_by_model, labels = {}, None
                for model in args.models:
                    metrics, scores, seconds = run_model(project, model, dataset, args.param)
                    labels = scores["label"].astype(int)
                    scores_by_model[model] = scores["scores"]
                    row = {
                        "split": split, "model": model, "run_seconds": round(seconds, 1),
                        **{k: metrics.get(k) for k in (
                            "n_threshold_scores", "threshold", "false_alarm_rate", "expected_false_alarm_rate",
                            "expected_false_alarm_rate_ci95", "test_false_alarm_rate", "test_false_alarm_rate_ci95",
                            "image_auroc", "image_auroc_ci95", "image_f1", "image_f1_ci95", "pixel_auroc",
                            "pixel_auroc_ci95", "aupro", "aupro_ci95", "f1_max", "tpr_at_far", "fit_seconds")},
                        "validation_image_auroc": (metrics.get("validation") or {}).get("image_auroc"),
                    }
                    print(json.dumps(row), flush=True)
                    with args.out.open("a") as fh:
                        fh.write(json.dumps(row) + "\n")
                if len(scores_by_model) > 1:
                    for diff in paired_auroc_differences(labels, scores_by_model):
                        diff = {"split": split, "paired": True, **diff}
                        print(json.dumps(diff), flush=True)
                        with args.out.open("a") as fh:
                            fh.write(json.dumps(diff) + "\n")
    print_table(args.out)


def print_table(path: Path) -> None:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    runs = [r for r in rows if not r.get("paired")]
    print("\n| split | model | n thr. scores | expected FAR [95%] | test FAR [95% CP] | image AUROC [95%] | F1 @ thr. [95%] | TPR @ 5% FAR | val. AUROC | run s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in runs:
        ef, ec = r["expected_false_alarm_rate"], r["expected_false_alarm_rate_ci95"]
        tf, tc = r["test_false_alarm_rate"], r["test_false_alarm_rate_ci95"]
        tpr = (r.get("tpr_at_far") or {}).get("0.05", {})
        print(f"| {r['split']} | {r['model']} | {r['n_threshold_scores']} | {ef:.1%} [{ec[0]:.1%}, {ec[1]:.1%}] | "
              f"{tf:.1%} [{tc[0]:.1%}, {tc[1]:.1%}] | {r['image_auroc']:.3f} [{r['image_auroc_ci95'][0]:.3f}, "
              f"{r['image_auroc_ci95'][1]:.3f}] | {r['image_f1']:.3f} [{r['image_f1_ci95'][0]:.3f}, {r['image_f1_ci95'][1]:.3f}] | "
              f"{tpr.get('tpr', float('nan')):.3f} | {r.get('validation_image_auroc') or float('nan'):.3f} | {r['run_seconds']} |")
    paired = [r for r in rows if r.get("paired")]
    if paired:
        print("\n| split | A - B | AUROC difference [95% paired] | significant |")
        print("|---|---|---|---|")
        for r in paired:
            print(f"| {r['split']} | {r['model_a']} - {r['model_b']} | {r['difference']:+.3f} "
                  f"[{r['ci95_low']:+.3f}, {r['ci95_high']:+.3f}] | {'yes' if r['significant'] else 'no'} |")


if __name__ == "__main__":
    main()
