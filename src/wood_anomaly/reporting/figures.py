"""Figures of the comparison report (matplotlib, no pyplot state) and heatmap overlays.

Every figure function takes :class:`~.results.ModelResult` objects and returns a
``matplotlib.figure.Figure``; :func:`figure_to_base64` turns one into an inlinable PNG.
"""

from __future__ import annotations

import base64
import io
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from sklearn.metrics import confusion_matrix, roc_auc_score, roc_curve

from wood_anomaly.evaluation.metrics import predict

from .results import ModelResult

logger = logging.getLogger(__name__)

CMAP = "jet"


# ------------------------------------------------------------------------------------ overlays
def map_display_range(maps: np.ndarray, low_pct: float = 1.0, high_pct: float = 99.9) -> tuple[float, float]:
    """One colour scale for all of a model's anomaly maps: (low, high) percentiles over every pixel.

    A fixed scale per model keeps good boards calm and defects hot (per-image min-max would
    make every board look defective).
    """
    values = np.asarray(maps, dtype=np.float32).ravel()
    values = values[np.isfinite(values)]
    if values.size == 0:
        return 0.0, 1.0
    if values.size > 2_000_000:  # percentiles of a fixed subsample are plenty for a colour scale
        values = values[np.linspace(0, values.size - 1, 2_000_000).astype(np.int64)]
    lo, hi = (float(v) for v in np.percentile(values, [low_pct, high_pct]))
    return (lo, hi) if hi > lo else (lo, lo + 1e-6)


def overlay_heatmap(
    image: np.ndarray, anomaly_map: np.ndarray, value_range: tuple[float, float], alpha: float = 0.45
) -> np.ndarray:
    """Blend a colour-mapped anomaly map over an RGB uint8 image (map resized to the image if needed)."""
    image = np.asarray(image, dtype=np.uint8)
    amap = np.asarray(anomaly_map, dtype=np.float32)
    if amap.shape != image.shape[:2]:
        from PIL import Image

        amap = np.asarray(
            Image.fromarray(amap, mode="F").resize((image.shape[1], image.shape[0]), Image.Resampling.BILINEAR)
        )
    lo, hi = value_range
    norm = np.clip((np.nan_to_num(amap, nan=lo) - lo) / max(hi - lo, 1e-12), 0.0, 1.0)
    heat = colormaps[CMAP](norm)[..., :3] * 255.0
    return np.clip((1.0 - alpha) * image.astype(np.float32) + alpha * heat, 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------------ helpers
def figure_to_base64(fig: Figure, dpi: int = 100) -> str:
    """PNG bytes of ``fig`` as base64 text (for ``<img src="data:image/png;base64,...">``)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _grid(n: int, cols: int = 3, size: tuple[float, float] = (4.0, 3.2)) -> tuple[Figure, list]:
    cols = max(1, min(cols, n))
    rows = max(1, int(np.ceil(n / cols)))
    fig = Figure(figsize=(size[0] * cols, size[1] * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel().tolist()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def _labels_scores(result: ModelResult) -> tuple[np.ndarray, np.ndarray]:
    return result.scores["label"].astype(int), result.scores["scores"].astype(np.float64)


# ------------------------------------------------------------------------------------ figures
def roc_figure(results: Sequence[ModelResult]) -> Figure:
    """Every model's test ROC curve on one plot (AUROC in the legend)."""
    fig = Figure(figsize=(6.0, 5.0), layout="constrained")
    ax = fig.subplots()
    for result in results:
        labels, scores = _labels_scores(result)
        if len(np.unique(labels)) < 2:
            logger.warning("%s: test labels hold one class only, no ROC curve", result.model)
            continue
        fpr, tpr, _ = roc_curve(labels, scores)
        ax.plot(fpr, tpr, lw=1.8, label=f"{result.model} (AUROC {roc_auc_score(labels, scores):.3f})")
    ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--", label="chance")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC, test images", xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower right", fontsize=8)
    return fig


def histogram_figure(results: Sequence[ModelResult]) -> Figure:
    """Per model: test score histograms of good and defective boards, validation scores, threshold."""
    fig, axes = _grid(len(results))
    for ax, result in zip(axes, results):
        labels, scores = _labels_scores(result)
        finite = scores[np.isfinite(scores)]
        bins = np.histogram_bin_edges(np.concatenate([finite, [result.threshold]]), bins=20)
        ax.hist(scores[labels == 0], bins=bins, alpha=0.6, color="tab:green", label="good (test)")
        ax.hist(scores[labels == 1], bins=bins, alpha=0.6, color="tab:red", label="defect (test)")
        if "val_scores" in result.scores and len(result.scores["val_scores"]):
            ax.hist(result.scores["val_scores"], bins=bins, histtype="step", color="black", lw=1.2, label="good (validation)")
        ax.axvline(result.threshold, color="tab:blue", ls="--", lw=1.5, label=f"threshold {result.threshold:.4g}")
        ax.set(title=result.model, xlabel="image score", ylabel="images")
        ax.legend(fontsize=7)
    return fig


def confusion_figure(results: Sequence[ModelResult]) -> Figure:
    """Per model: confusion matrix of the test images at the validation threshold."""
    fig, axes = _grid(len(results), cols=6, size=(2.8, 2.8))
    for ax, result in zip(axes, results):
        labels, scores = _labels_scores(result)
        cm = confusion_matrix(labels, predict(scores, result.threshold), labels=[0, 1])
        ax.imshow(cm, cmap="Blues", vmin=0, vmax=max(int(cm.max()), 1))
        for (i, j), value in np.ndenumerate(cm):
            ax.text(j, i, str(value), ha="center", va="center", fontsize=12,
                    color="white" if value > cm.max() / 2 else "black")
        ax.set(xticks=[0, 1], yticks=[0, 1], xticklabels=["good", "defect"], yticklabels=["good", "defect"],
               xlabel="predicted", ylabel="true", title=result.model)
    return fig


def select_boards(results: Sequence[ModelResult], n_defect: int, n_good: int) -> list[str]:
    """The same boards for every model: evenly spread over the defective and the good test images
    that every model scored (paths in sorted order, so the choice is stable between runs)."""
    common: set[str] | None = None
    labels: dict[str, int] = {}
    for result in results:
        paths = [str(p) for p in result.scores["path"]]
        labels.update(zip(paths, result.scores["label"].astype(int).tolist()))
        common = set(paths) if common is None else common & set(paths)
    chosen: list[str] = []
    for label, n in ((1, n_defect), (0, n_good)):
        pool = sorted(p for p in (common or set()) if labels[p] == label)
        if pool and n > 0:
            idx = np.unique(np.linspace(0, len(pool) - 1, min(n, len(pool))).round().astype(int))
            chosen += [pool[i] for i in idx]
    return chosen


def load_board(path: str, shape: tuple[int, int]) -> np.ndarray:
    """The board image resized to the map's shape; a grey placeholder when the file is gone."""
    from wood_anomaly.data.layout import CorruptImageError, load_image

    try:
        image = load_image(path, size=shape[0]) if shape[0] == shape[1] else None
        if image is None:
            from PIL import Image

            image = np.asarray(Image.fromarray(load_image(path)).resize((shape[1], shape[0])))
        return image
    except (CorruptImageError, OSError) as exc:
        logger.warning("gallery: cannot read board %s (%s); showing the heatmap on grey", path, exc)
        return np.full((*shape, 3), 128, dtype=np.uint8)


def gallery_figure(
    results: Sequence[ModelResult], boards: Sequence[str], images: Mapping[str, np.ndarray] | None = None
) -> Figure:
    """Rows = boards, columns = the board then each model's heatmap overlay (score, verdict)."""
    images = dict(images or {})
    n_cols = len(results) + 1
    fig = Figure(figsize=(2.1 * n_cols, 2.3 * max(len(boards), 1)), layout="constrained")
    axes = fig.subplots(max(len(boards), 1), n_cols, squeeze=False)
    index = {r.model: {str(p): i for i, p in enumerate(r.scores["path"])} for r in results}
    ranges = {r.model: map_display_range(r.scores["maps"]) for r in results}
    for row, board in enumerate(boards):
        first = results[0]
        i0 = index[first.model][board]
        label = int(first.scores["label"][i0])
        shape = tuple(first.scores["maps"][i0].shape)
        image = images.get(board)
        if image is None:
            image = load_board(board, shape)
        ax = axes[row, 0]
        ax.imshow(image)
        ax.set_title(f"{Path(board).parent.name}/{Path(board).name}\n{'DEFECT' if label else 'good'}", fontsize=8)
        for col, result in enumerate(results, start=1):
            i = index[result.model][board]
            amap = result.scores["maps"][i].astype(np.float32)
            score = float(result.scores["scores"][i])
            verdict = int(predict(np.array([score]), result.threshold)[0])
            board_image = image if image.shape[:2] == amap.shape else load_board(board, amap.shape)
            ax = axes[row, col]
            ax.imshow(overlay_heatmap(board_image, amap, ranges[result.model]))
            ok = verdict == label
            ax.set_title(
                f"{result.model}\n{score:.3g} -> {'defect' if verdict else 'good'}",
                fontsize=8, color="black" if ok else "tab:red",
            )
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    return fig
