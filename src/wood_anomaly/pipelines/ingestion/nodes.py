"""Ingestion nodes: find (or generate) the raw data set, validate it, split it and load it as arrays."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from wood_anomaly.data.layout import prepare_dataset as _prepare_dataset
from wood_anomaly.data.synthetic import README_MARKER, README_NAME, generate_synthetic_wood

logger = logging.getLogger(__name__)


DEFAULT_SYNTHETIC_PATH = "data/01_raw/synthetic_wood"
_BANNER = "=" * 100


def _is_synthetic_set(root: Path) -> bool:
    readme = root / README_NAME
    return readme.is_file() and README_MARKER in readme.read_text(encoding="utf-8", errors="ignore")


def _synthetic_options(dataset: dict[str, Any]) -> tuple[Path, dict[str, Any]]:
    """(where the synthetic set goes, generator arguments) from ``dataset.synthetic_set``."""
    options = dict(dataset.get("synthetic_set") or {})
    legacy = dataset.get("synthetic")
    if isinstance(legacy, dict):  # older configs: dataset.synthetic was the generator's arguments
        options = {**legacy, **options}
    path = Path(str(options.pop("path", DEFAULT_SYNTHETIC_PATH))).expanduser()
    return path, options


def _generate_or_reuse(root: Path, options: dict[str, Any]) -> None:
    """Generate the synthetic set at ``root`` unless the same one is already there (same arguments)."""
    if _is_synthetic_set(root):
        text = (root / README_NAME).read_text(encoding="utf-8", errors="ignore")
        defaults = {"n_train": 40, "n_test_good": 12, "n_test_defect": 16, "image_size": 128, "seed": 0}
        wanted = {**defaults, **options}
        for line in text.splitlines():
            if line.startswith("Parameters: "):
                have = json.loads(line[len("Parameters: "):])
                if all(have.get(k) == (list(v) if isinstance(v, tuple) else v) for k, v in wanted.items()):
                    return
    generate_synthetic_wood(root, **options)  # refuses a folder it did not write itself


def locate_raw_dataset(dataset: dict[str, Any]) -> dict[str, Any]:
    """Return where the raw images are: ``dataset.path`` (the shipped real boards by default), or a
    generated SYNTHETIC set when asked for (``dataset.synthetic: true``) or when ``dataset.path`` does
    not exist (``dataset.generate_if_missing: true``; false makes that an error).

    The synthetic set is written to ``dataset.synthetic_set.path`` (default
    ``data/01_raw/synthetic_wood``), never to ``dataset.path``: the shipped boards and a user's own
    folder are never touched, and the generator refuses any folder it did not write itself.
    Training on it is announced with a banner in the log; metrics and the report mark it.
    """
    root = Path(dataset["path"]).expanduser()
    wants_synthetic = dataset.get("synthetic") is True or str(dataset.get("synthetic")).lower() == "true"
    if not wants_synthetic and root.exists():
        synthetic = _is_synthetic_set(root)
        if synthetic:
            logger.warning("Using the SYNTHETIC wood data set at %s (generated earlier).", root)
        return {"root": str(root.resolve()), "synthetic": synthetic}
    if not wants_synthetic and not dataset.get("generate_if_missing", True):
        raise FileNotFoundError(
            f"dataset.path={root} does not exist (and dataset.generate_if_missing is false): "
            "point it at an MVTec-layout folder (train/good, test/good, test/<defect>, ground_truth/<defect>)"
        )
    synthetic_root, options = _synthetic_options(dataset)
    if synthetic_root.resolve() == root.resolve() and root.exists() and not _is_synthetic_set(root):
        raise FileExistsError(f"dataset.synthetic_set.path={synthetic_root} is the real data folder: choose another one")
    why = "dataset.synthetic=true" if wants_synthetic else f"dataset.path={root} does not exist"
    _generate_or_reuse(synthetic_root, options)
    logger.warning(
        "\n%s\n%s: training on a generated SYNTHETIC wood data set at %s (%s).\n"
        "Metrics on it say nothing about real boards; the shipped real boards are data/01_raw/wood "
        "(or pass --params=dataset.path=<your folder>).\n%s",
        _BANNER, why, synthetic_root, ", ".join(f"{k}={v}" for k, v in options.items()), _BANNER,
    )
    return {"root": str(synthetic_root.resolve()), "synthetic": True}


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
