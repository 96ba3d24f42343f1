"""Ingestion nodes: find (or generate) the raw data set, validate it, split it and load it as arrays."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from wood_anomaly.data.layout import prepare_dataset as _prepare_dataset
from wood_anomaly.data.synthetic import generate_synthetic_wood

logger = logging.getLogger(__name__)


def locate_raw_dataset(dataset: dict[str, Any]) -> dict[str, Any]:
    """Return where the raw images are; generate synthetic wood there when the folder does not exist.

    The synthetic set is only ever written to a path that does not exist yet, so a user's own
    folder is never touched (a typo in ``dataset.path`` would otherwise silently train on fake data:
    set ``dataset.generate_if_missing: false`` to make a missing folder an error instead).
    """
    root = Path(dataset["path"]).expanduser()
    synthetic = False
    if not root.exists():
        if not dataset.get("generate_if_missing", True):
            raise FileNotFoundError(
                f"dataset.path={root} does not exist (and dataset.generate_if_missing is false): "
                "point it at an MVTec-layout folder (train/good, test/good, test/<defect>, ground_truth/<defect>)"
            )
        synth = dict(dataset.get("synthetic", {}))
        logger.warning(
            "dataset.path=%s does not exist: generating a SYNTHETIC wood data set there (%s). "
            "Metrics on it say nothing about real boards; pass --params=dataset.path=<your folder> for real data.",
            root,
            ", ".join(f"{k}={v}" for k, v in synth.items()),
        )
        generate_synthetic_wood(root, **synth)
        synthetic = True
    elif (root / "README.txt").exists() and "synthetic" in (root / "README.txt").read_text(errors="ignore").lower():
        synthetic = True
        logger.warning("Using the SYNTHETIC wood data set at %s (generated earlier).", root)
    return {"root": str(root.resolve()), "synthetic": synthetic}


def prepare_dataset(
    raw_dataset: dict[str, Any], dataset: dict[str, Any], runtime: dict[str, Any]
) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Validate and split the raw folder, load every image (and mask) at ``dataset.image_size``."""
    manifest, arrays = _prepare_dataset(
        raw_dataset["root"],
        image_size=int(dataset["image_size"]),
        val_fraction=float(dataset.get("val_fraction", 0.1)),
        seed=int(runtime.get("seed", 0)),
    )
    manifest = manifest.assign(synthetic=bool(raw_dataset["synthetic"]))
    # Where the images came from travels with them, so every model's metrics can say it.
    arrays = {**arrays, "data_source": np.array(raw_dataset["root"]), "synthetic": np.array(bool(raw_dataset["synthetic"]))}
    counts = manifest.groupby(["split", "label"]).size().to_dict()
    logger.info("Prepared %d images from %s: %s", len(manifest), raw_dataset["root"], counts)
    return manifest, arrays
