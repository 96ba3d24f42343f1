"""EfficientAD fold ensemble on the label-free validation set only (no test image is used).

    .venv/bin/python benchmarks/efficientad_validation.py [--set key=value ...] [--root DIR]

Fits the default 2-fold cross-fitted ensemble (models/ensemble.py) on all good training boards, as the
pipeline does, and prints what the pipeline's defaults are chosen on: the AUROC of the out-of-fold
scores of held-out good boards vs the same boards with a pasted synthetic defect, the spread of the
good out-of-fold scores, and the fit seconds. ``--set`` overrides EfficientAD config keys (YAML values)
on top of conf/base/parameters_efficientad.yml.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from sklearn.metrics import roc_auc_score

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from wood_anomaly.data.layout import prepare_dataset  # noqa: E402
from wood_anomaly.models.ensemble import EfficientADFolds  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=REPO / "data" / "01_raw" / "wood")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    config = yaml.safe_load((REPO / "conf/base/parameters_efficientad.yml").read_text())["efficientad"]["model"]
    for item in args.set:
        key, _, value = item.partition("=")
        config[key] = yaml.safe_load(value)
    _, arrays = prepare_dataset(args.root, 256, 0.1, args.seed, progress=False)
    good = arrays["images"][np.isin(arrays["split"], ["train", "val"])]  # train/good only: no test image
    start = time.perf_counter()
    model = EfficientADFolds(**config).fit(good, None, seed=args.seed, device="cpu", progress=False)
    fit_s = time.perf_counter() - start
    oof_good = np.asarray(model.threshold_scores)
    oof_defect = np.asarray(model.validation_defect_scores)
    labels = np.r_[np.zeros(oof_good.size), np.ones(oof_defect.size)]
    print(json.dumps({
        "overrides": {k: v for k, v in (i.partition("=")[::2] for i in args.set)},
        "n_good": int(oof_good.size), "n_pasted_defects": int(oof_defect.size),
        "validation_auroc": round(float(roc_auc_score(labels, np.r_[oof_good, oof_defect])), 4),
        "good_oof_median": round(float(np.median(oof_good)), 4),
        "good_oof_iqr": round(float(np.subtract(*np.percentile(oof_good, [75, 25]))), 4),
        "fit_s": round(fit_s, 1),
    }))


if __name__ == "__main__":
    main()
