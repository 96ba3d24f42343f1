"""Evaluation figures (Kedro-free). Each function returns a ``matplotlib.figure.Figure``.

Figures are built with matplotlib's object API (``Figure(...)``, no ``pyplot`` state), so they
render with the Agg backend whatever backend is active, never open windows and are freed when
dropped. ``kedro_datasets.matplotlib.MatplotlibDataset`` saves them (``fig.savefig``).

The decision rule is the one of :mod:`wood_anomaly.evaluation.metrics`: anomalous when
``score > threshold``, the threshold being the validation threshold.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.figure import Figure
from sklearn.metrics import ConfusionMatrixDisplay, confusion_matrix, roc_auc_score, roc_curve

from .metrics import predict

GOOD_COLOUR = "tab:green"
DEFECT_COLOUR = "tab:red"
CLASS_NAMES = ("good", "defect")


def _labels_scores(labels: Any, scores: Any) -> tuple[np.ndarray, np.ndarray]:
    y_true = np.asarray(labels).astype(np.int64).ravel()
    y_score = np.asarray(scores, dtype=np.float64).ravel()
    if y_true.shape != y_score.shape:
        raise ValueError(f"{y_true.size} labels for {y_score.size} scores")
    return y_true, y_score


def roc_curve_figure(labels: Any, scores: Any, title: str = "ROC curve") -> Figure:
    """Image-level ROC curve with its AUROC and the chance diagonal (one axes)."""
    y_true, y_score = _labels_scores(labels, scores)
    fig = Figure(figsize=(5, 5), layout="constrained")
    ax = fig.add_subplot()
    if np.unique(y_true).size == 2:
        fpr, tpr, _ = roc_curve(y_true, y_score)
        ax.plot(fpr, tpr, color="tab:blue", lw=2,
                label=f"AUROC = {roc_auc_score(y_true, y_score):.3f}")
    else:
        ax.text(0.5, 0.5, "needs good and defect images", ha="center", va="center")
    ax.plot([0, 1], [0, 1], color="grey", ls="--", lw=1, label="chance")
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="false positive rate",
           ylabel="true positive rate", title=title, aspect="equal")
    ax.legend(loc="lower right")
    return fig


def score_histogram_figure(
    labels: Any, scores: Any, threshold: float, title: str = "Anomaly scores"
) -> Figure:
    """Histograms of good vs defect scores (shared bins) and the validation threshold line."""
    y_true, y_score = _labels_scores(labels, scores)
    fig = Figure(figsize=(7, 4), layout="constrained")
    ax = fig.add_subplot()
    low = min(float(y_score.min(initial=threshold)), threshold)
    high = max(float(y_score.max(initial=threshold)), threshold)
    bins = np.linspace(low, high if high > low else low + 1.0, 31)
    for value, colour in ((0, GOOD_COLOUR), (1, DEFECT_COLOUR)):
        name = CLASS_NAMES[value]
        selected = y_score[y_true == value]
        ax.hist(selected, bins=bins, alpha=0.55, color=colour, label=f"{name} (n={selected.size})")
    ax.axvline(threshold, color="black", ls="--", lw=1.5,
               label=f"validation threshold = {threshold:.4g}")
    ax.set(xlabel="anomaly score", ylabel="images", title=title)
    ax.legend()
    return fig


def confusion_matrix_figure(
    labels: Any, scores: Any, threshold: float, title: str = "Confusion matrix"
) -> Figure:
    """2x2 confusion matrix (rows: true good/defect, columns: predicted) at ``threshold``."""
    y_true, y_score = _labels_scores(labels, scores)
    matrix = confusion_matrix(y_true, predict(y_score, threshold), labels=[0, 1])
    fig = Figure(figsize=(4.5, 4), layout="constrained")
    ax = fig.add_subplot()
    ConfusionMatrixDisplay(matrix, display_labels=list(CLASS_NAMES)).plot(
        ax=ax, cmap="Blues", colorbar=False, values_format="d"
    )
    ax.set_title(f"{title}\nscore > {threshold:.4g} = defect")
    return fig


def select_examples(
    scores: Any, labels: Any, n: int = 6, n_good: int = 2
) -> list[int]:
    """Deterministic choice of images to show: the top-scoring defects, then good images.

    Good images: the highest-scoring one (the likeliest false alarm) and then the ones closest to
    the median good score (typical). Ties are broken by index. Fewer images are returned when
    there are not enough; defects fill the slots good images cannot and vice versa.
    """
    y_true, y_score = _labels_scores(labels, scores)
    defects = np.flatnonzero(y_true == 1)
    goods = np.flatnonzero(y_true == 0)
    defects = defects[np.lexsort((defects, -y_score[defects]))]
    n_defect = min(defects.size, n - min(n_good, goods.size, n))
    n_good = min(goods.size, n - n_defect)  # good images fill the slots defects cannot
    chosen_goods: list[int] = []
    if n_good > 0:
        by_score = goods[np.lexsort((goods, -y_score[goods]))]
        chosen_goods.append(int(by_score[0]))
        median = np.median(y_score[goods])
        typical = goods[np.lexsort((goods, np.abs(y_score[goods] - median)))]
        chosen_goods += [int(i) for i in typical if int(i) not in chosen_goods][: n_good - 1]
    return [int(i) for i in defects[:n_defect]] + chosen_goods


def _rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    if image.shape[-1] == 1:
        image = np.repeat(image, 3, axis=-1)
    return image


def heatmap_overlay_figure(
    images: np.ndarray,
    maps: np.ndarray,
    masks: np.ndarray | None,
    scores: Any,
    labels: Any,
    threshold: float,
    n: int = 6,
    vmin: float | None = None,
    vmax: float | None = None,
    title: str = "Anomaly maps",
) -> Figure:
    """Grid of examples: one row per image, columns image / heatmap overlay / mask contour.

    ``images`` uint8 [N,H,W,3] (gray [N,H,W] accepted), ``maps`` [N,h,w] (stretched over the
    image if smaller), ``masks`` [N,H,W] 0/1 at image resolution, or None. Rows are picked by
    :func:`select_examples` (top-scoring defects and a couple of good images). The colour scale
    is shared by all rows: ``vmin``/``vmax`` default to the range of ``maps`` (all images), so
    colours compare across rows. Row titles give label, score and the decision at ``threshold``.
    """
    images = np.asarray(images)
    maps = np.asarray(maps, dtype=np.float32)
    y_true, y_score = _labels_scores(labels, scores)
    if not (images.shape[0] == maps.shape[0] == y_score.size):
        raise ValueError(
            f"{images.shape[0]} images, {maps.shape[0]} maps and {y_score.size} scores differ"
        )
    if masks is not None and np.asarray(masks).shape[0] != images.shape[0]:
        raise ValueError(f"{np.asarray(masks).shape[0]} masks for {images.shape[0]} images")
    vmin = float(maps.min()) if vmin is None else float(vmin)
    vmax = float(maps.max()) if vmax is None else float(vmax)
    if vmax <= vmin:
        vmax = vmin + 1e-6
    rows = select_examples(y_score, y_true, n=n)
    columns = ("image", "anomaly map", "ground truth")
    fig = Figure(figsize=(9, 3 * max(len(rows), 1)), layout="constrained")
    fig.suptitle(f"{title} (threshold {threshold:.4g})")
    if not rows:
        fig.add_subplot().text(0.5, 0.5, "no images", ha="center", va="center")
        return fig
    axes = fig.subplots(len(rows), 3, squeeze=False)
    heat = None
    for row, index in enumerate(rows):
        image = _rgb(images[index])
        height, width = image.shape[:2]
        extent = (-0.5, width - 0.5, height - 0.5, -0.5)  # imshow's own pixel extent
        flagged = bool(y_score[index] > threshold)
        label = CLASS_NAMES[int(y_true[index])]
        axes[row, 0].imshow(image)
        axes[row, 0].set_title(
            f"#{index} {label}: score {y_score[index]:.4g} {'>' if flagged else '<='} threshold"
            f" -> {CLASS_NAMES[int(flagged)]}",
            fontsize=9,
            loc="left",
        )
        axes[row, 1].imshow(image)
        heat = axes[row, 1].imshow(maps[index], cmap="jet", alpha=0.5, vmin=vmin, vmax=vmax,
                                   extent=extent, interpolation="bilinear")
        axes[row, 2].imshow(image)
        mask = None if masks is None else np.asarray(masks[index]) > 0
        if mask is not None and mask.any():
            axes[row, 2].contour(mask.astype(np.float32), levels=[0.5], colors="lime",
                                 linewidths=1.5)
        for col, ax in enumerate(axes[row]):
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_xlabel(columns[col])
                ax.xaxis.set_label_position("top")
    if heat is not None:
        fig.colorbar(heat, ax=axes.ravel().tolist(), shrink=min(0.6, 2.0 / len(rows)),
                     label="anomaly score", location="right")
    return fig
