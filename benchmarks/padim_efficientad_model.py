"""Benchmark PaDiM and EfficientAD on the real wood set (issue #3).

Fit on 90 % of train/good (the other 10 % = validation, seed 0), score test/good + test/defect, print
image AUROC, pixel AUROC, fit seconds, ms per scored image, state size and peak memory.

    .venv/bin/python benchmarks/padim_efficientad_model.py                     # both, CPU defaults
    .venv/bin/python benchmarks/padim_efficientad_model.py --model padim --set sigma=8
    .venv/bin/python benchmarks/padim_efficientad_model.py --model efficientad --set steps=3000 --device cuda

Peak memory: ``ru_maxrss`` of the process (includes the ~1 GB that importing torch/timm costs;
the line also prints the growth over the value before fitting) and, on CUDA, torch's peak
allocated GPU memory. Timings on a shared machine are inflated by the others' load.
"""

from __future__ import annotations

import argparse
import ast
import io
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

REPO = Path(__file__).resolve().parents[1]


def default_data_root() -> Path:
    env = os.environ.get("WOOD_REAL_DATA")
    return Path(env) if env else REPO / "data" / "01_raw" / "wood"  # the shipped real boards


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def parse_sets(items: list[str]) -> dict[str, object]:
    out: dict[str, object] = {}
    for item in items:
        key, _, value = item.partition("=")
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value
    return out


def run(name: str, config: dict[str, object], arrays: dict[str, np.ndarray], device: str, seed: int) -> None:
    from wood_anomaly.data.layout import select
    from wood_anomaly.models.efficientad import EfficientAD
    from wood_anomaly.models.padim import Padim

    train, val, test = (select(arrays, s) for s in ("train", "val", "test"))
    cls = {"padim": Padim, "efficientad": EfficientAD}[name]
    model = cls(**config)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    rss0 = rss_mb()
    t0 = time.perf_counter()
    model.fit(train["images"], val["images"], seed=seed, device=device, progress=False)
    fit_s = time.perf_counter() - t0
    model.score(test["images"][:2])  # warm-up
    t0 = time.perf_counter()
    scores, maps = model.score(test["images"], batch_size=8)
    ms = (time.perf_counter() - t0) / len(scores) * 1000
    state = model.to_artifacts()["state"]
    buf = io.BytesIO()
    torch.save(state, buf)
    img_auc = roc_auc_score(test["label"], scores)
    has = test["has_mask"] | (test["label"] == 0)
    pix_auc = roc_auc_score(test["masks"][has].ravel(), maps[has].ravel())
    gpu = f", gpu peak {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB" if device.startswith("cuda") else ""
    print(
        f"{name:12s} image AUROC {img_auc:.3f} | pixel AUROC {pix_auc:.3f} | fit {fit_s:.1f} s | "
        f"{ms:.0f} ms/img | state {len(buf.getvalue()) / 1e6:.1f} MB | peak RSS {rss_mb():.0f} MiB "
        f"(+{rss_mb() - rss0:.0f} over pre-fit){gpu} | n_train {len(train['images'])} n_val {len(val['images'])} "
        f"n_test {len(scores)} | device {device} threads {torch.get_num_threads()} | config {config}",
        flush=True,
    )
    if getattr(model, "history", None):
        h = model.history
        print(f"{name:12s} history: {len(h['loss'])} epochs, loss {h['loss'][0]:.4f} -> {h['loss'][-1]:.4f}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=["padim", "efficientad", "both"], default="both")
    ap.add_argument("--data", type=Path, default=default_data_root())
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="model config overrides")
    args = ap.parse_args(argv)
    if not (args.data / "train" / "good").is_dir():
        print(f"real data set not found at {args.data} (set WOOD_REAL_DATA or --data)", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    from wood_anomaly.data.layout import prepare_dataset
    from wood_anomaly.models.base import resolve_device

    _, arrays = prepare_dataset(args.data, image_size=256, val_fraction=0.1, seed=args.seed, progress=False)
    device = resolve_device(args.device)
    names = ["padim", "efficientad"] if args.model == "both" else [args.model]
    for name in names:
        run(name, parse_sets(args.set), arrays, device, args.seed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
