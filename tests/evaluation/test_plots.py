"""Figures: right type, expected axes and content, savable to PNG (also through Kedro)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure
from PIL import Image

from wood_anomaly.evaluation.plots import (
    confusion_matrix_figure,
    heatmap_overlay_figure,
    roc_curve_figure,
    score_histogram_figure,
    select_examples,
)

LABELS = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1])
SCORES = np.array([0.1, 0.5, 0.2, 0.3, 0.9, 0.4, 0.8, 0.95, 0.7])


def _png(fig: Figure, tmp_path: Path, name: str) -> Image.Image:
    path = tmp_path / f"{name}.png"
    fig.savefig(path)
    image = Image.open(path)
    assert image.format == "PNG" and min(image.size) > 100
    return image


def test_roc_curve_figure(tmp_path: Path) -> None:
    fig = roc_curve_figure(LABELS, SCORES, title="padim")
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    ax = fig.axes[0]
    assert ax.get_title() == "padim"
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend[0] == "AUROC = 0.950"  # 19 of 20 (defect, good) pairs ordered
    curve = ax.lines[0]
    assert curve.get_xdata()[0] == 0 and curve.get_ydata()[-1] == 1
    _png(fig, tmp_path, "roc")


def test_score_histogram_figure(tmp_path: Path) -> None:
    fig = score_histogram_figure(LABELS, SCORES, threshold=0.6, title="scores")
    ax = fig.axes[0]
    assert len(fig.axes) == 1 and ax.get_title() == "scores"
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["good (n=4)", "defect (n=5)", "validation threshold = 0.6"]
    (line,) = ax.lines
    assert list(line.get_xdata()) == [0.6, 0.6]
    heights = [sum(p.get_height() for p in container) for container in ax.containers]
    assert heights == [4, 5]
    _png(fig, tmp_path, "hist")


def test_histogram_threshold_outside_the_scores_is_visible() -> None:
    fig = score_histogram_figure(LABELS, SCORES, threshold=3.0)
    assert fig.axes[0].get_xlim()[1] >= 3.0


def test_confusion_matrix_figure(tmp_path: Path) -> None:
    fig = confusion_matrix_figure(LABELS, SCORES, threshold=0.6)
    ax = fig.axes[0]
    assert len(fig.axes) == 1  # no colorbar
    cells = [t.get_text() for t in ax.texts]
    # good: 4 below 0.6 -> tn 4, fp 0; defect: 0.4 below -> fn 1, tp 4
    assert cells == ["4", "0", "1", "4"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["good", "defect"]
    _png(fig, tmp_path, "cm")


def test_select_examples_is_deterministic() -> None:
    # defects by score: 7 (0.95), 4 (0.9), 6 (0.8), 8 (0.7); goods: top 1 (0.5), median ~0.25
    assert select_examples(SCORES, LABELS, n=6) == [7, 4, 6, 8, 1, 2]
    assert select_examples(SCORES, LABELS, n=3) == [7, 1, 2]
    assert select_examples(SCORES, LABELS, n=20) == [7, 4, 6, 8, 5, 1, 2, 3, 0]
    assert select_examples(SCORES[4:], LABELS[4:], n=3) == [7 - 4, 0, 2]  # no good images


def test_heatmap_overlay_figure(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, size=(9, 32, 32, 3), dtype=np.uint8)
    masks = np.zeros((9, 32, 32), dtype=np.uint8)
    masks[4:, 10:20, 10:20] = 1
    maps = rng.random((9, 32, 32)).astype(np.float32) * 5 + masks * 5
    fig = heatmap_overlay_figure(images, maps, masks, SCORES, LABELS, threshold=0.6, n=6)
    image_axes = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert len(image_axes) == 18 and len(fig.axes) == 19  # 6 rows x 3 columns + colour bar
    assert image_axes[0].get_title(loc="left") == "#7 defect: score 0.95 > threshold -> defect"
    assert image_axes[15].get_title(loc="left") == "#2 good: score 0.2 <= threshold -> good"
    heat = image_axes[1].images[1]
    assert heat.get_clim() == pytest.approx((maps.min(), maps.max()))  # shared colour scale
    assert len(image_axes[2].collections) == 1  # contour of the defect mask
    assert len(image_axes[17].collections) == 0  # good image: no contour
    _png(fig, tmp_path, "heat")


def test_heatmap_overlay_accepts_gray_images_and_no_masks(tmp_path: Path) -> None:
    images = np.zeros((3, 16, 16), dtype=np.uint8)
    maps = np.zeros((3, 8, 8), dtype=np.float32)  # coarser map is stretched
    fig = heatmap_overlay_figure(images, maps, None, [0.1, 0.9, 0.2], [0, 1, 0], 0.5, n=2,
                                 vmin=0.0, vmax=2.0)
    image_axes = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert len(image_axes) == 6
    assert image_axes[1].images[1].get_clim() == (0.0, 2.0)
    assert image_axes[1].images[1].get_extent() == [-0.5, 15.5, 15.5, -0.5]
    _png(fig, tmp_path, "gray")


def test_heatmap_overlay_length_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="differ"):
        heatmap_overlay_figure(np.zeros((2, 8, 8, 3), np.uint8), np.zeros((3, 8, 8)), None,
                               [0.1, 0.2], [0, 1], 0.5)


def test_figures_save_through_kedro_matplotlib_dataset(tmp_path: Path) -> None:
    from kedro.io.core import Version
    from kedro_datasets.matplotlib import MatplotlibDataset

    dataset = MatplotlibDataset(filepath=str(tmp_path / "roc.png"), version=Version(None, None))
    dataset.save(roc_curve_figure(LABELS, SCORES))
    assert dataset.exists()
