"""How much of a test AUROC comes from outside the labelled defects? (a check of the test set, not of a model)

    .venv/bin/python benchmarks/test_set_shift.py [--data DIR] [--outputs data/07_model_output] [--dilate 16]

Part 1 reads the test images and masks only, no model. For simple whole-board statistics it gives the AUROC of
"defective board" vs "good board", computed on the pixels outside each defect mask (dilated by ``--dilate`` px):
mean gray level, its standard deviation, Laplacian variance (sharpness / texture), JPEG file size, red/blue
ratio. A test set whose good and defective boards differ only inside the defects gives about 0.5 for each.

Part 2 reads each model's newest ``scores.npz`` under ``--outputs`` (a finished `kedro run`). For each model
it prints the test image AUROC, the AUROC of the 99th percentile of its anomaly map over the whole board, and the
same percentile over the pixels outside the dilated defect mask only ("off-defect"). A model that reacts only to
the labelled defects scores about 0.5 off-defect. Anything above that is a signal from the rest of the board:
unlabelled marks, rougher grain, a different capture.

Nothing here chooses a default. It says how far the test set itself can be trusted to rank models by how
well they find defects, which the label-free validation set (pasted defects on good training boards, the
same boards throughout) cannot show.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage
from sklearn.metrics import roc_auc_score

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from wood_anomaly.data.layout import scan_dataset  # noqa: E402
from wood_anomaly.evaluation.metrics import off_defect_auroc  # noqa: E402
from wood_anomaly.models.registry import MODEL_NAMES  # noqa: E402


def outside_masks(mask_path: str | None, shape: tuple[int, int], dilate: int) -> np.ndarray:
    """Bool [H, W]: the pixels outside the dilated defect mask (all of them for a good board)."""
    if not mask_path:
        return np.ones(shape, bool)
    mask = np.asarray(Image.open(mask_path).convert("L").resize(shape[::-1], Image.Resampling.NEAREST)) > 127
    return ~ndimage.binary_dilation(mask, iterations=dilate) if dilate else ~mask


def board_statistics(test, dilate: int) -> dict[str, float]:
    labels, stats = [], {k: [] for k in ("mean gray", "gray std", "Laplacian variance", "JPEG bytes", "red / blue")}
    for row in test.itertuples():
        image = np.asarray(Image.open(row.path).convert("RGB"), dtype=np.float32)
        keep = outside_masks(row.mask_path if isinstance(row.mask_path, str) else None, image.shape[:2], dilate)
        gray = image.mean(-1)
        stats["mean gray"].append(gray[keep].mean())
        stats["gray std"].append(gray[keep].std())
        stats["Laplacian variance"].append(ndimage.laplace(gray)[keep].var())
        stats["JPEG bytes"].append(Path(row.path).stat().st_size)
        stats["red / blue"].append(image[..., 0][keep].mean() / max(image[..., 2][keep].mean(), 1e-6))
        labels.append(int(row.label))
    return {k: float(roc_auc_score(labels, v)) for k, v in stats.items()}


def off_defect_aurocs(outputs: Path, masks: dict[str, str], dilate: int) -> dict[str, dict[str, float]]:
    """Per model (its newest scores.npz): test image AUROC and the pipeline's ``off_defect_auroc`` / ``map_auroc``
    (``wood_anomaly.evaluation.metrics.off_defect_auroc``), with the masks matched to the scored boards by file name."""
    out = {}
    for model in MODEL_NAMES:
        files = sorted((outputs / model / "scores.npz").glob("*/scores.npz"))
        if not files:
            continue
        run = np.load(files[-1], allow_pickle=False)
        maps = run["maps"].astype(np.float32)
        truth = np.stack([~outside_masks(masks.get(Path(str(p)).name), maps.shape[1:], 0) for p in run["path"]])
        measured = off_defect_auroc(run["label"], maps, truth, dilate=dilate)
        out[model] = {
            "scores_file": str(files[-1]),
            "image_auroc": float(roc_auc_score(run["label"], run["scores"])),
            "map_p99_auroc": measured.get("map_auroc", float("nan")),
            "off_defect_map_p99_auroc": measured.get("off_defect_auroc", float("nan")),
        }
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(REPO / "data" / "01_raw" / "wood"))
    parser.add_argument("--outputs", default=str(REPO / "data" / "07_model_output"))
    parser.add_argument("--dilate", type=int, default=16, help="px added around each defect mask before 'outside'")
    args = parser.parse_args()
    manifest = scan_dataset(Path(args.data))
    test = manifest[manifest["source_split"] == "test"].reset_index(drop=True)
    if test["label"].nunique() < 2:
        parser.error(f"{args.data}: the test split needs good and defective boards")
    result = {"board_statistics_auroc": board_statistics(test, args.dilate)}
    masks = {Path(p).name: m for p, m in zip(test["path"], test["mask_path"]) if isinstance(m, str) and m}
    result["models"] = off_defect_aurocs(Path(args.outputs), masks, args.dilate)
    print(json.dumps(result, indent=1))
    print(f"\nwhole-board statistics, outside the defect masks (+{args.dilate} px): AUROC defective vs good "
          "(0.5 = no difference; below 0.5 = lower on defective boards)")
    for name, auc in result["board_statistics_auroc"].items():
        print(f"  {name:20s} {auc:.3f}")
    if result["models"]:
        print("\n| model | test image AUROC | map p99 AUROC | off-defect map p99 AUROC |\n|---|---|---|---|")
        for model, r in result["models"].items():
            print(f"| {model} | {r['image_auroc']:.3f} | {r['map_p99_auroc']:.3f} | {r['off_defect_map_p99_auroc']:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
