"""Measure the Keras models (autoencoder, vae, ganomaly) on the real wood set.

Train on 63 of train/good (7 held out as validation, split by a seed-0 permutation), score
test/good + test/defect, print image AUROC, pixel AUROC (from the anomaly maps vs the masks),
fit seconds and scoring ms/image. One JSON line per run.

    .venv/bin/python benchmarks/keras_models.py autoencoder --set image_size=128 --set map_kind=mse+ssim
    .venv/bin/python benchmarks/keras_models.py vae ganomaly

Params given with --set are parsed as JSON when possible (numbers, booleans, lists), else strings.
The data folder: --data, else $WOOD_REAL_DATA, else the shipped data/01_raw/wood.
Several --variant JSON dicts run one after another on the same data (e.g. --variant '{"map_kind": "ssim"}').
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.metrics import roc_auc_score

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO / "data" / "01_raw" / "wood"  # the shipped real boards


def load_real(root: Path, seed: int = 0) -> dict[str, np.ndarray]:
    """train (63) / val (7) / test arrays through the project's own loader and split (val_fraction 0.1)."""
    from wood_anomaly.data.layout import prepare_dataset, select

    _, arrays = prepare_dataset(root, image_size=256, val_fraction=0.1, seed=seed, progress=False)
    test = select(arrays, "test")
    return {
        "train": select(arrays, "train")["images"],
        "val": select(arrays, "val")["images"],
        "test": test["images"],
        "masks": test["masks"],
        "labels": test["label"],
    }


def model_class(name: str):
    if name == "autoencoder":
        from wood_anomaly.models.autoencoder import AutoEncoder as cls
    elif name == "vae":
        from wood_anomaly.models.vae import VAE as cls
    elif name == "ganomaly":
        from wood_anomaly.models.ganomaly import GANomaly as cls
    else:
        raise SystemExit(f"unknown model {name!r}: autoencoder, vae, ganomaly")
    return cls


def _parse(value: str):
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


def run(
    name: str,
    params: dict,
    data: dict[str, np.ndarray],
    seed: int,
    progress: bool,
    grid_dir: Path | None,
    score_variants: list[dict] | None = None,
) -> list[dict]:
    cls = model_class(name)
    model = cls(**params)
    t0 = time.perf_counter()
    model.fit(data["train"], data["val"], seed=seed, progress=progress)
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    scores, maps = model.score(data["test"])
    ms = 1000 * (time.perf_counter() - t0) / len(data["test"])
    labels = data["labels"]
    out = {
        "model": name,
        "params": params,
        "image_auroc": round(float(roc_auc_score(labels, scores)), 4),
        "pixel_auroc": round(float(roc_auc_score(data["masks"].ravel(), maps.ravel())), 4),
        "fit_s": round(fit_s, 1),
        "ms_per_img": round(ms, 1),
        "epochs_run": len(next(iter(model.history.values()), [])),
        "final": {k: round(v[-1], 5) for k, v in model.history.items() if k in ("loss", "val_loss")},
        "good_score_mean": round(float(scores[labels == 0].mean()), 4),
        "defect_score_mean": round(float(scores[labels == 1].mean()), 4),
    }
    results = [out]
    for var in score_variants or []:  # score-only changes on the same trained networks
        model.set_scoring(data["val"], **var)
        t0 = time.perf_counter()
        s2, m2 = model.score(data["test"])
        results.append({
            "model": name, "params": params, "score_variant": var,
            "image_auroc": round(float(roc_auc_score(labels, s2)), 4),
            "pixel_auroc": round(float(roc_auc_score(data["masks"].ravel(), m2.ravel())), 4),
            "ms_per_img": round(1000 * (time.perf_counter() - t0) / len(data["test"]), 1),
        })
    if grid_dir is not None:
        grid_dir.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(grid_dir / f"{name}_scores.npz", scores=scores, labels=labels, maps=maps.astype(np.float16))
        idx = np.r_[np.arange(3), np.flatnonzero(labels == 1)[:5]]
        Image.fromarray(model.reconstruction_grid(data["test"][idx])).save(grid_dir / f"{name}_grid.png")
    return results


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--variant", action="append", default=[], metavar="JSON")
    ap.add_argument("--score-variant", action="append", default=[], metavar="JSON",
                    help="score-only params (map_kind, map_sigma, aggregation, topk_fraction, latent_weight) "
                    "re-evaluated on the same trained model")
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("WOOD_REAL_DATA", DEFAULT_DATA)))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--progress", action="store_true")
    ap.add_argument("--grid-dir", type=Path, default=None)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    base = dict(kv.split("=", 1) for kv in args.set)
    base = {k: _parse(v) for k, v in base.items()}
    variants = [json.loads(v) for v in args.variant] or [{}]
    data = load_real(args.data, seed=args.seed)
    for name in args.models:
        for var in variants:
            svars = [json.loads(v) for v in args.score_variant]
            for res in run(name, {**base, **var}, data, args.seed, args.progress, args.grid_dir, svars):
                print(json.dumps(res), flush=True)


if __name__ == "__main__":
    main()
