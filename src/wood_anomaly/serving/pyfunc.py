"""The served model: an MLflow ``PythonModel`` over the project's own inference path.

``predict`` takes a DataFrame with a column ``image`` (base64 of an image file's bytes: PNG, JPEG,
BMP, TIFF; raw ``bytes`` work too) and an optional boolean column ``return_map``, and returns one
row per input, in order::

    score      float   the model's image score (the same number `kedro run --pipeline=inference` gives)
    verdict    str     "defect" when score > threshold, else "good" ("unreadable" in on_error="row" mode)
    threshold  float   the model's own saved threshold (its metrics.json, whatever rule chose it)
    model      str     model name (patchcore, padim, ...)
    version    str     the Kedro version (training run timestamp) of the weights
    error      str     why this row could not be scored (on_error="row" only); null ("" in row mode) when scored
    heatmap    str     base64 PNG heatmap overlay at the trained size (only when return_map is true)

Each image goes through the inference pipeline's steps: :func:`~wood_anomaly.data.layout.decode_image`
(the same decoding as :func:`~wood_anomaly.data.layout.load_image`), resize to the size the model was
trained at (:func:`~wood_anomaly.data.layout.resize_image`), the model's ``score``, the verdict rule
:func:`~wood_anomaly.evaluation.metrics.predict` at the model's threshold.

The weights travel as one MLflow artifact, ``bundle``: the model's saved files in the project's
versioned layout, loaded back with :class:`~wood_anomaly.datasets.trained_model.TrainedModelDataset`
(the dataset the inference pipeline uses), so serving and inference cannot drift apart.

Bad input: by default (``params={"on_error": "raise"}``, what the REST server uses) a request with
an unusable row is refused as a whole with ``MlflowException(INVALID_PARAMETER_VALUE)`` (HTTP 400)
naming every bad row and its problem; ``on_error="row"`` (Spark batch scoring) returns such rows
with verdict ``unreadable`` and the ``error`` column set instead.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.pyfunc import PythonModel

from wood_anomaly.serving.coalesce import CoalescingScorer, coalescing_scorer

logger = logging.getLogger(__name__)

#: refuse images whose header declares more pixels than this (decompression bombs), before decoding
MAX_PIXELS = 50_000_000
IMAGE_COLUMN = "image"
MAP_COLUMN = "return_map"
OUTPUT_COLUMNS = ["score", "verdict", "threshold", "model", "version", "error"]
MAP_OUTPUT_COLUMN = "heatmap"
BUNDLE_META = "serving.json"
#: environment variable capping PyTorch/FAISS threads of the served model (e.g. 1 per Spark worker)
THREADS_ENV = "WOOD_ANOMALY_NUM_THREADS"
#: environment variable: model calls the served model runs at once (default: see scoring_lanes)
LANES_ENV = "WOOD_ANOMALY_SERVING_LANES"
ON_ERROR = ("raise", "row")


class RowError(ValueError):
    """One input row cannot be scored; the message names the row and the problem."""


def _bad_request(message: str) -> MlflowException:
    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)


def image_bytes(value: Any, row: int) -> bytes:
    """One cell of the ``image`` column -> the image file's bytes (base64 text or raw bytes)."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
    elif isinstance(value, str):
        text = "".join(value.split())  # tolerate line-wrapped base64
        if text.startswith("data:") and "," in text:  # a data URI: data:image/png;base64,....
            text = text.split(",", 1)[1]
        try:
            data = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise RowError(f"row {row}: 'image' is not valid base64 ({exc})") from exc
    elif value is None or (isinstance(value, float) and np.isnan(value)):
        raise RowError(f"row {row}: 'image' is empty (null)")
    else:
        raise RowError(f"row {row}: 'image' must be base64 text, got {type(value).__name__}")
    if not data:
        raise RowError(f"row {row}: 'image' is empty (0 bytes)")
    return data


def decode_row(value: Any, row: int, size: tuple[int, int]) -> np.ndarray:
    """base64 / bytes -> uint8 RGB at the trained ``size``, as the inference pipeline prepares a file."""
    from wood_anomaly.data.layout import CorruptImageError, decode_image, resize_image

    data = image_bytes(value, row)
    try:
        image = decode_image(data, f"row {row}", max_pixels=MAX_PIXELS)
    except CorruptImageError as exc:
        raise RowError(str(exc)) from exc
    return resize_image(image, size)


def png_base64(image: np.ndarray) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _flag(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes")
    try:
        return bool(value) and not (isinstance(value, float) and np.isnan(value))
    except (TypeError, ValueError):
        return False


def scoring_lanes(model: Any, cpu_count: int | None = None) -> tuple[int | None, int]:
    """(threads per model call, model calls at once) for the served ``model``.

    Models whose ``score`` may run in several threads at once (``concurrent_scoring = True``: the
    PyTorch models in eval mode) get one lane per core with one thread each: measured with
    ``benchmarks/serve_load.py`` (PatchCore, 2 cores, 4 clients), p50 115 ms and 34 images/s against
    148 ms and 26 images/s for one call at a time on both cores (small batches spend much of a
    two-thread call waiting on each other). Others (Keras) score one call at a time on every core.
    ``WOOD_ANOMALY_NUM_THREADS`` (e.g. 1 per Spark task) and ``WOOD_ANOMALY_SERVING_LANES`` override.
    """
    cpus = max(1, int(cpu_count or os.cpu_count() or 1))
    concurrent = bool(getattr(model, "concurrent_scoring", False))
    threads = int(os.environ.get(THREADS_ENV) or 0) or None
    lanes = int(os.environ.get(LANES_ENV) or 0)
    if not lanes:
        lanes = max(1, cpus // (threads or 1)) if concurrent else 1
    if lanes > 1 and not concurrent:
        logger.warning("%s=%d ignored: %s scores one call at a time", LANES_ENV, lanes, type(model).__name__)
        lanes = 1
    if threads is None and lanes > 1:
        threads = max(1, cpus // lanes)
    return threads, lanes


def load_bundle(bundle: str | Path) -> tuple[Any, dict[str, Any]]:
    """A serving bundle (see :func:`wood_anomaly.serving.register.write_bundle`) -> (TrainedModel, meta)."""
    from wood_anomaly.datasets.trained_model import TrainedModelDataset

    bundle = Path(bundle)
    meta = json.loads((bundle / BUNDLE_META).read_text())
    trained = TrainedModelDataset(
        model=meta["model"],
        model_version=meta["version"],
        models_dir=str(bundle / "models"),
        metrics_path=str(bundle / "metrics.json"),
        scores_path=str(bundle / "scores.npz"),  # not shipped: image size and colour scale are in the metrics/meta
        artifact_datasets=meta.get("artifact_datasets"),  # how the files were saved (the catalog's factories)
    ).load()
    if meta.get("display_range") is not None:
        trained.display_range = tuple(float(v) for v in meta["display_range"])
    return trained, meta


class WoodAnomalyModel(PythonModel):
    """``mlflow.pyfunc`` flavour of one trained wood-anomaly model (any of the six)."""

    def __init__(self) -> None:
        self.scorer: CoalescingScorer | None = None  # set by load_context

    def __getstate__(self) -> dict[str, Any]:  # the scorer's lock does not pickle; the loaded model is not shipped
        return {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__()

    def load_context(self, context: Any) -> None:
        from wood_anomaly.models.base import set_cpu_threads

        self.trained, self.meta = load_bundle(context.artifacts["bundle"])
        self.model = self.trained.build()
        threads, lanes = scoring_lanes(self.model)
        set_cpu_threads(threads)
        self.size = tuple(int(s) for s in self.trained.image_size)
        self.threshold = float(self.trained.threshold)
        self.batch_size = int(self.meta.get("batch_size", 16))
        # concurrent requests share model calls, at most `lanes` calls at once (serving/coalesce.py); the
        # thread cap is set again in the thread that scores (OpenMP's thread count, FAISS's, is per thread)
        self.scorer = coalescing_scorer(self.model, self.batch_size, threads=threads, lanes=lanes)
        logger.info("Serving %s version %s at %s px, threshold %.6g (%d scoring lane(s) x %s thread(s))",
                    self.trained.name, self.trained.version, self.size, self.threshold, lanes, threads or "all")

    # ------------------------------------------------------------------ predict
    def _rows(self, model_input: Any) -> pd.DataFrame:
        if isinstance(model_input, pd.DataFrame):
            frame = model_input
        elif isinstance(model_input, dict):
            frame = pd.DataFrame(model_input)
        else:
            raise _bad_request(f"expected a table with an '{IMAGE_COLUMN}' column, got {type(model_input).__name__}")
        if IMAGE_COLUMN not in frame.columns:
            raise _bad_request(
                f"missing column '{IMAGE_COLUMN}' (base64 of an image file) in the request; columns: {list(frame.columns)}"
            )
        if len(frame) == 0:
            raise _bad_request(f"empty batch: the request has no rows; send at least one '{IMAGE_COLUMN}'")
        return frame.reset_index(drop=True)

    def predict(self, context, model_input, params=None):  # no type hints: MLflow would read them as a schema
        from wood_anomaly.evaluation.metrics import predict as verdict_rule
        from wood_anomaly.reporting.figures import map_display_range, overlay_heatmap

        on_error = str((params or {}).get("on_error") or "raise")
        if on_error not in ON_ERROR:
            raise _bad_request(f"params.on_error must be one of {ON_ERROR}, got {on_error!r}")
        frame = self._rows(model_input)
        images: dict[int, np.ndarray] = {}
        errors: dict[int, str] = {}
        for row, value in enumerate(frame[IMAGE_COLUMN].tolist()):
            try:
                images[row] = decode_row(value, row, self.size)
            except RowError as exc:
                message = str(exc)  # "row 3: ..."; a Spark row is identified by its path, not its place in a batch
                errors[row] = message if on_error == "raise" else message.removeprefix(f"row {row}: ")
        if errors and on_error == "raise":
            listed = "; ".join(errors[r] for r in sorted(errors)[:10]) + ("; ..." if len(errors) > 10 else "")
            raise _bad_request(f"{len(errors)} of {len(frame)} row(s) cannot be scored, request refused: {listed}")

        wants_map = frame[MAP_COLUMN].map(_flag).tolist() if MAP_COLUMN in frame.columns else [False] * len(frame)
        order = sorted(images)
        scores: dict[int, float] = {}
        maps: dict[int, np.ndarray] = {}
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            chunk_scores, chunk_maps = self.scorer.score(np.stack([images[r] for r in chunk]))
            for j, row in enumerate(chunk):
                scores[row] = float(chunk_scores[j])
                if wants_map[row]:
                    maps[row] = np.asarray(chunk_maps[j], dtype=np.float32)

        value_range = self.trained.display_range or (map_display_range(np.stack(list(maps.values()))) if maps else None)
        records = []
        for row in range(len(frame)):
            base = {"threshold": self.threshold, "model": self.trained.name, "version": self.trained.version}
            if any(wants_map):
                base[MAP_OUTPUT_COLUMN] = None  # null (not NaN) where no map was asked for
            if row in errors:
                records.append({"score": float("nan"), "verdict": "unreadable", **base, "error": errors[row]})
                continue
            verdict = "defect" if verdict_rule(np.array([scores[row]]), self.threshold)[0] else "good"
            # no error: null; "" in row mode (spark_udf casts a string column with None in it to "None")
            record = {"score": scores[row], "verdict": verdict, **base, "error": "" if on_error == "row" else None}
            if row in maps:
                record[MAP_OUTPUT_COLUMN] = png_base64(overlay_heatmap(images[row], maps[row], value_range))
            records.append(record)
        columns = OUTPUT_COLUMNS + ([MAP_OUTPUT_COLUMN] if any(wants_map) else [])
        out = pd.DataFrame.from_records(records, columns=columns)
        for column in ("error", MAP_OUTPUT_COLUMN):  # null in JSON, not NaN (pandas' str dtype would make None NaN)
            if column in out.columns:
                out[column] = pd.Series([r.get(column) for r in records], dtype=object)
        return out
