"""Augmentation nodes."""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from wood_anomaly.data.augment import AugmentConfig, sample_grid


def augmentation_preview(prepared_dataset: dict[str, np.ndarray], augmentation: dict[str, Any]) -> Image.Image:
    """A grid of training images (top row) and seeded augmented versions of them (rows below)."""
    config = AugmentConfig.from_dict(augmentation["transforms"])
    train = prepared_dataset["images"][prepared_dataset["split"] == "train"]
    grid = sample_grid(train, config, seed=int(augmentation.get("preview_seed", 0)), n=int(augmentation.get("preview_images", 8)))
    return Image.fromarray(grid)
