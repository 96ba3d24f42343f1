"""How close PatchCore's approximate HNSW search comes to the exact one, on validation boards only.

    .venv/bin/python benchmarks/patchcore_search_recall.py [--root DIR] [--ef 8 12 16 24 32 48] [--m 16]

Fits PatchCore with conf/base (train/good minus the 10% validation hold-out, seed 0, like the pipeline),
then embeds the held-out good boards and their flipped / re-lit copies (no test image, no label) and
searches their patches in the bank exactly (FAISS IndexFlatL2) and with HNSW graphs of each efSearch.
Prints per setting: recall of the 5 nearest neighbours, the relative error of the patch score (mean of
the 5 distances) and of the image score, and search ms per 256 x 256 image on this machine.

The rule that set ``hnsw_ef_search`` in conf/base (docs/speed.md): the smallest efSearch whose recall@5
is >= 0.99 on these validation patches.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "benchmarks"))

from patchcore_model import default_root, load_split  # noqa: E402

from wood_anomaly.data.nuisances import apply_nuisance  # noqa: E402
from wood_anomaly.models.patchcore import PatchCore  # noqa: E402
from wood_anomaly.models.patchcore.search import hnsw_over  # noqa: E402

RECALL_TARGET = 0.99


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=default_root())
    ap.add_argument("--ef", type=int, nargs="+", default=[8, 10, 12, 14, 16, 18, 20, 22, 24, 32, 48])
    ap.add_argument("--m", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    import faiss

    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    config = yaml.safe_load((REPO / "conf" / "base" / "parameters_patchcore.yml").read_text())["patchcore"]["model"]
    config["search"] = "faiss"
    data = load_split(args.root)
    model = PatchCore(**config).fit(data["train"], seed=0, device="cpu", progress=False)
    val = data["val"]
    boards = np.concatenate([val] + [apply_nuisance(name, val)[0] for name in ("hflip", "vflip", "brightness_up", "brightness_down")])
    with torch.no_grad():
        feats = model.embed(boards)
    n, c, h, w = feats.shape
    queries = np.ascontiguousarray(feats.permute(0, 2, 3, 1).reshape(-1, c).float().numpy())
    bank = model.memory_bank
    k = int(config["patch_neighbors"])
    exact_d, exact_i = bank.search(queries, k)
    exact_patch = np.sqrt(np.maximum(exact_d, 0)).mean(1)
    print(f"bank {bank.ntotal} x {bank.d}; {n} validation images ({len(val)} held-out good boards x 5 conditions), "
          f"{len(queries)} patches, k = {k}")
    print(f"{'efSearch':>8} {'recall@5':>9} {'patch err mean':>15} {'patch err max':>14} {'image err max':>14} {'ms/img':>7}")
    t = time.perf_counter()
    bank.search(queries, k)
    print(f"{'exact':>8} {1.0:9.4f} {0.0:15.2e} {0.0:14.2e} {0.0:14.2e} {(time.perf_counter() - t) / n * 1000:7.1f}")
    chosen = None
    topk = max(1, int(round(float(config["score_topk"]) * h * w)))
    exact_img = np.sort(exact_patch.reshape(n, -1), 1)[:, -topk:].mean(1)
    for ef in args.ef:
        graph = hnsw_over(bank, args.m, ef)
        graph.search(queries[:4096], k)  # warm-up
        t = time.perf_counter()
        d, i = graph.search(queries, k)
        ms = (time.perf_counter() - t) / n * 1000
        recall = float(np.mean([len(set(a) & set(b)) for a, b in zip(i, exact_i)]) / k)
        patch = np.sqrt(np.maximum(d, 0)).mean(1)
        err = np.abs(patch - exact_patch) / np.maximum(exact_patch, 1e-12)
        img = np.sort(patch.reshape(n, -1), 1)[:, -topk:].mean(1)  # top-k mean of the raw grid (no smoothing)
        img_err = np.abs(img - exact_img) / np.maximum(exact_img, 1e-12)
        print(f"{ef:8d} {recall:9.4f} {err.mean():15.2e} {err.max():14.2e} {img_err.max():14.2e} {ms:7.1f}")
        if chosen is None and recall >= RECALL_TARGET:
            chosen = ef
    print(f"smallest efSearch with recall@5 >= {RECALL_TARGET}: {chosen}")


if __name__ == "__main__":
    main()
