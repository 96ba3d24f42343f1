"""Project pipelines: ingestion, augmentation and one pipeline per model (same shape, own namespace)."""

from __future__ import annotations

import importlib

from kedro.pipeline import Pipeline

from wood_anomaly.hooks import MODEL_NAMES

# Models trained by gradient descent use the augmentation transforms (and show the preview grid).
AUGMENTED_MODELS = {"efficientad", "autoencoder", "vae", "ganomaly"}


def _create(name: str) -> Pipeline | None:
    try:
        module = importlib.import_module(f"wood_anomaly.pipelines.{name}")
    except ModuleNotFoundError as exc:
        if exc.name == f"wood_anomaly.pipelines.{name}":
            return None
        raise
    return module.create_pipeline()


def register_pipelines() -> dict[str, Pipeline]:
    """`kedro run --pipeline=<model>` runs ingestion (+ augmentation where used) and that model end to end."""
    ingestion = _create("ingestion")
    augmentation = _create("augmentation")
    pipelines: dict[str, Pipeline] = {"ingestion": ingestion, "augmentation": ingestion + augmentation}
    default = ingestion + augmentation
    for name in MODEL_NAMES:
        model_pipeline = _create(name)
        if model_pipeline is None:
            continue
        pipelines[name] = ingestion + (augmentation if name in AUGMENTED_MODELS else Pipeline([])) + model_pipeline
        default += model_pipeline
    for extra in ("reporting", "inference"):
        extra_pipeline = _create(extra)
        if extra_pipeline is not None:
            pipelines[extra] = extra_pipeline
            if extra == "reporting":
                default += extra_pipeline
    pipelines["__default__"] = default
    return pipelines
