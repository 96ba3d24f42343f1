"""Inference nodes: read a folder of board images, score them with a saved model, write verdicts + overlays.

Usage::

    kedro run --pipeline=inference --params="inference.model=patchcore,inference.images=/path/to/boards"

The model is the newest saved version of that name (``inference.version=<timestamp>`` pins one);
its verdict threshold is the validation threshold saved in its metrics.json.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from wood_anomaly.data.layout import IMAGE_SUFFIXES, CorruptImageError, is_image_file, load_image, resize_image
from wood_anomaly.datasets.trained_model import TrainedModel
from wood_anomaly.reporting.figures import map_display_range, overlay_heatmap
from wood_anomaly.evaluation.metrics import predict

logger = logging.getLogger(__name__)

PREDICTION_COLUMNS = ["file", "score", "verdict", "threshold", "ms", "original_size", "resized", "model", "version", "error"]


class InferenceInputError(ValueError):
    """The images to score cannot be used (missing or empty folder, unreadable image)."""


def list_image_files(folder: str | Path) -> list[Path]:
    """Image files directly in ``folder`` (by suffix, sorted by name); errors name the folder."""
    root = Path(folder).expanduser()
    if not root.exists():
        raise InferenceInputError(f"inference.images={root}: folder does not exist")
    if not root.is_dir():
        raise InferenceInputError(f"inference.images={root}: not a folder")
    files = sorted(p for p in root.iterdir() if is_image_file(p))
    if not files:
        raise InferenceInputError(
            f"inference.images={root}: no images in this folder (looked for {', '.join(sorted(IMAGE_SUFFIXES))})"
        )
    return files


def read_images(inference: dict[str, Any]) -> dict[str, Any]:
    """Read every image of ``inference.images`` at its own size.

    Returns ``{"files": [str], "images": [uint8 array or None], "errors": {file: message}}``.
    An unreadable image is an error naming it, unless ``inference.skip_unreadable`` is true:
    then it is logged, kept as a row with verdict ``unreadable``, and the rest are scored.
    """
    folder = inference.get("images")
    if not folder:
        raise InferenceInputError(
            "inference.images is not set: kedro run --pipeline=inference --params=\"inference.images=<folder>\""
        )
    files = list_image_files(folder)
    images: list[np.ndarray | None] = []
    errors: dict[str, str] = {}
    for path in files:
        try:
            images.append(load_image(path))
        except CorruptImageError as exc:
            if not inference.get("skip_unreadable", False):
                raise InferenceInputError(
                    f"unreadable image {path}: {exc}. Fix or remove it, or pass inference.skip_unreadable=true "
                    "to score the other images"
                ) from exc
            logger.warning("Skipping unreadable image %s (%s)", path, exc)
            images.append(None)
            errors[str(path)] = str(exc)
    if all(image is None for image in images):
        raise InferenceInputError(f"inference.images={folder}: none of the {len(files)} image(s) can be read")
    logger.info("Read %d image(s) from %s (%d unreadable)", len(files), folder, len(errors))
    return {"files": [str(p) for p in files], "images": images, "errors": errors}


def _resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return resize_image(image, size)  # the same resize as the served model (wood_anomaly.serving)


def _overlay_names(files: list[str]) -> list[str]:
    """Overlay file names: the image's stem, or its whole name when two images share a stem."""
    stems = [Path(f).stem for f in files]
    return [Path(f).stem if stems.count(Path(f).stem) == 1 else Path(f).name for f in files]


def score_images(
    trained_model: TrainedModel, batch: dict[str, Any], inference: dict[str, Any]
) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Score the readable images at the model's training size; verdict at its validation threshold.

    Returns the predictions table (one row per file, see :data:`PREDICTION_COLUMNS`; ``ms`` is the
    batch's scoring time divided by its size, after one untimed warm-up call) and
    ``{name: overlay PNG array}``.
    """
    wanted = inference.get("model")
    if wanted and wanted != trained_model.name:
        raise InferenceInputError(
            f"inference.model={wanted} in the parameters but the catalog loaded {trained_model.name}: pass the "
            f"model on the command line, --params=\"inference.model={wanted}\" (the catalog reads runtime params)"
        )
    size = tuple(trained_model.image_size)
    model = trained_model.build()
    threshold = trained_model.threshold
    batch_size = max(1, int(inference.get("batch_size", 8)))
    files: list[str] = batch["files"]
    names = _overlay_names(files)
    readable = [i for i, image in enumerate(batch["images"]) if image is not None]
    rows: dict[int, dict[str, Any]] = {}
    maps: dict[int, np.ndarray] = {}
    inputs: dict[int, np.ndarray] = {}
    for i in readable:
        image = batch["images"][i]
        original = f"{image.shape[1]}x{image.shape[0]}"
        resized = image.shape[:2] != size
        if resized:
            logger.warning("%s is %s px; resized to %dx%d, the size %s was trained at", files[i], original, size[1], size[0], trained_model.name)
            image = _resize(image, size)
        inputs[i] = image
        rows[i] = {"original_size": original, "resized": resized}
    if readable:  # untimed warm-up: the first call loads weights / builds kernels, not per-image cost
        model.score(inputs[readable[0]][None], batch_size=1)
    for start in range(0, len(readable), batch_size):
        chunk = readable[start : start + batch_size]
        t0 = time.perf_counter()
        scores, amaps = model.score(np.stack([inputs[i] for i in chunk]), batch_size=batch_size)
        ms = 1000.0 * (time.perf_counter() - t0) / len(chunk)
        for j, i in enumerate(chunk):
            rows[i].update(score=float(scores[j]), ms=round(ms, 2))
            maps[i] = np.asarray(amaps[j], dtype=np.float32)
    value_range = trained_model.display_range or map_display_range(np.stack(list(maps.values())))
    records = []
    overlays: dict[str, np.ndarray] = {}
    for i, file in enumerate(files):
        base = {"file": Path(file).name, "threshold": threshold, "model": trained_model.name, "version": trained_model.version}
        if i not in rows:
            records.append({**base, "score": float("nan"), "verdict": "unreadable", "ms": float("nan"),
                            "original_size": "", "resized": False, "error": batch["errors"].get(file, "")})
            continue
        verdict = "defect" if predict(np.array([rows[i]["score"]]), threshold)[0] else "good"
        records.append({**base, **rows[i], "verdict": verdict, "error": ""})
        overlays[names[i]] = overlay_heatmap(inputs[i], maps[i], value_range)
    table = pd.DataFrame(records, columns=PREDICTION_COLUMNS)
    counts = table["verdict"].value_counts().to_dict()
    logger.info("%s (version %s), threshold %.4g: %s", trained_model.name, trained_model.version, threshold, counts)
    return table, overlays
