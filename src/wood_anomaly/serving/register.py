"""Log a trained model as an MLflow pyfunc and register it as ``wood-anomaly-<model>`` (a new version per call).

Called by the model pipelines (``<model>.register`` saves to ``MlflowRegisteredModelDataset``), so
every ``kedro run --pipeline=<model>`` (and the default run, once per model, into the model's
child run) adds a registry version. Usable without Kedro too::

    from wood_anomaly.serving.register import log_and_register
    log_and_register("patchcore", "2026-11-30T12.00.00.000Z", image_size=(256, 256), example=image)
"""

from __future__ import annotations

import base64
import io
import json
import logging
import shutil
import tempfile
from contextlib import contextmanager, nullcontext
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .pyfunc import BUNDLE_META, IMAGE_COLUMN, MAP_COLUMN, MAP_OUTPUT_COLUMN, WoodAnomalyModel

logger = logging.getLogger(__name__)

REGISTERED_NAME = "wood-anomaly-{model}"
#: metrics copied to the model version's tags (when present)
TAGGED_METRICS = ("image_auroc", "image_f1", "f1_max", "pixel_auroc", "aupro", "score_ms_per_image", "fit_seconds")


def registered_name(model: str) -> str:
    return REGISTERED_NAME.format(model=model)


def signature() -> Any:
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

    inputs = Schema([ColSpec("string", IMAGE_COLUMN), ColSpec("boolean", MAP_COLUMN, required=False)])
    outputs = Schema([
        ColSpec("double", "score"),
        ColSpec("string", "verdict"),
        ColSpec("double", "threshold"),
        ColSpec("string", "model"),
        ColSpec("string", "version"),
        ColSpec("string", "error", required=False),
        ColSpec("string", MAP_OUTPUT_COLUMN, required=False),
    ])
    params = ParamSchema([ParamSpec("on_error", "string", "raise")])
    return ModelSignature(inputs=inputs, outputs=outputs, params=params)


def example_frame(image: np.ndarray) -> pd.DataFrame:
    """A one-row request: the image as a base64 PNG."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buffer, format="PNG")
    return pd.DataFrame({IMAGE_COLUMN: [base64.b64encode(buffer.getvalue()).decode("ascii")]})


def pip_requirements() -> list[str]:
    """The project's pinned runtime dependencies (the served model needs the wood_anomaly package itself:
    serve it from the project's environment, ``--env-manager local``)."""
    try:
        requires = importlib_metadata.requires("wood_anomaly") or []
    except importlib_metadata.PackageNotFoundError:
        requires = []
    return [r for r in requires if "extra ==" not in r]


def write_bundle(
    folder: Path,
    model: str,
    version: str,
    *,
    image_size: tuple[int, int],
    display_range: tuple[float, float] | None,
    models_dir: str,
    metrics_path: str,
    scores_path: str,
    batch_size: int = 16,
) -> Any:
    """Copy one saved model version (weights + metrics.json) into ``folder`` in the project's versioned layout.

    Returns the :class:`TrainedModel` as the inference pipeline would load it (which also checks that
    it loads).
    """
    from wood_anomaly.datasets.trained_model import TrainedModelDataset, catalog_artifact_datasets

    # how each artifact is stored (the project's catalog factories): shipped in the bundle, so the served
    # model loads without the project's conf/
    artifact_datasets = catalog_artifact_datasets()
    source = TrainedModelDataset(
        model=model, model_version=version, models_dir=models_dir, metrics_path=metrics_path, scores_path=scores_path,
        artifact_datasets=artifact_datasets,
    )
    trained = source.load()
    models_root = Path(models_dir.format(model=model)).resolve()
    for key, file in trained.files.items():
        target = folder / "models" / Path(file).resolve().relative_to(models_root)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(file, target)
    metrics = {**trained.metrics, "image_size": [int(image_size[0]), int(image_size[1])]}
    metrics_file = folder / "metrics.json" / version / "metrics.json"
    metrics_file.parent.mkdir(parents=True)
    metrics_file.write_text(json.dumps(metrics, indent=2, default=str))
    meta = {
        "model": model,
        "version": version,
        "model_path": trained.model_path,
        "image_size": [int(image_size[0]), int(image_size[1])],
        "display_range": [float(v) for v in display_range] if display_range is not None else None,
        "threshold": float(trained.threshold),
        "batch_size": int(batch_size),
        "files": {k: str(Path(f).resolve().relative_to(models_root)) for k, f in trained.files.items()},
        "artifact_datasets": artifact_datasets,
    }
    (folder / BUNDLE_META).write_text(json.dumps(meta, indent=2))
    return trained


@contextmanager
def _in_run(run_id: str | None):
    """Log into ``run_id`` (a model's child run), else into the active run, else into a new run."""
    import mlflow

    active = mlflow.active_run()
    if run_id and (active is None or active.info.run_id != run_id):
        with mlflow.start_run(run_id=run_id, nested=active is not None) as run:
            yield run
    elif active is not None:
        with nullcontext(active) as run:
            yield run
    else:
        with mlflow.start_run() as run:
            yield run


def log_and_register(
    model: str,
    version: str,
    *,
    image_size: tuple[int, int],
    example: np.ndarray,
    display_range: tuple[float, float] | None = None,
    run_id: str | None = None,
    models_dir: str = "data/06_models/{model}",
    metrics_path: str = "data/08_reporting/{model}/metrics.json",
    scores_path: str = "data/07_model_output/{model}/scores.npz",
    batch_size: int = 16,
) -> Any:
    """Log ``model`` at Kedro ``version`` as a pyfunc and register a new version of ``wood-anomaly-<model>``.

    Tags of the model version: threshold (and its rule), backbone, the test metrics, the Kedro
    version, the trained image size; its description says the same in a sentence. Returns the
    registry's ``ModelVersion``.
    """
    import mlflow
    from mlflow.tracking import MlflowClient

    name = registered_name(model)
    with tempfile.TemporaryDirectory(prefix=f"wood-anomaly-{model}-") as tmp:
        bundle = Path(tmp) / "bundle"
        trained = write_bundle(
            bundle, model, version, image_size=image_size, display_range=display_range,
            models_dir=models_dir, metrics_path=metrics_path, scores_path=scores_path, batch_size=batch_size,
        )
        metrics = trained.metrics
        with _in_run(run_id) as run:
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=WoodAnomalyModel(),
                artifacts={"bundle": str(bundle)},
                signature=signature(),
                input_example=example_frame(example),
                registered_model_name=name,
                pip_requirements=pip_requirements(),
                metadata={"wood_anomaly_model": model, "kedro_version": version},
            )
            run_id = run.info.run_id
    client = MlflowClient()
    model_version = str(info.registered_model_version)
    tags = {
        "model": model,
        "kedro_version": version,
        "threshold": f"{trained.threshold:.9g}",
        "threshold_rule": str(metrics.get("threshold_rule", "")),
        "backbone": str(metrics.get("backbone", "")),
        "image_size": f"{image_size[0]}x{image_size[1]}",
        "data_source": str(metrics.get("data_source", "")),
        "synthetic_data": str(metrics.get("synthetic_data", "")),
    }
    for key in TAGGED_METRICS:
        if isinstance(metrics.get(key), (int, float)):
            tags[f"test_{key}" if not key.endswith(("seconds", "per_image")) else key] = f"{float(metrics[key]):.6g}"
    for key, value in tags.items():
        client.set_model_version_tag(name, model_version, key, value)
    described = ", ".join(f"{k} {float(metrics[k]):.3f}" for k in ("image_auroc", "image_f1", "pixel_auroc", "aupro")
                          if isinstance(metrics.get(k), (int, float)))
    client.update_model_version(
        name, model_version,
        description=(
            f"{model} (Kedro version {version}, backbone {tags['backbone'] or 'none'}), trained at "
            f"{image_size[0]}x{image_size[1]} px. Verdict: defect when score > threshold {tags['threshold']} "
            f"({tags['threshold_rule'] or 'its saved validation threshold'}). Test: {described or 'n/a'}. "
            f"Data: {tags['data_source'] or 'n/a'}."
        ),
    )
    try:
        client.update_registered_model(
            name, description=f"wood-anomaly {model}: POST base64 board images, get score / verdict / threshold."
        )
    except Exception as exc:  # noqa: BLE001 - a description is nice to have
        logger.warning("could not describe registered model %s: %s", name, exc)
    logger.info("Registered %s version %s (run %s, Kedro version %s, threshold %s)",
                name, model_version, run_id, version, tags["threshold"])
    return client.get_model_version(name, model_version)
