"""Project pipelines: ingestion, augmentation, one pipeline per model (same shape, own namespace),
reporting, inference and batch scoring (Spark)."""

from __future__ import annotations

import importlib

from kedro.pipeline import Pipeline

from wood_anomaly.models.registry import AUGMENTED_MODELS, MODEL_NAMES
from wood_anomaly.pipelines import augmentation, batch_scoring, inference, ingestion, reporting, tuning


def register_pipelines() -> dict[str, Pipeline]:
    """`kedro run --pipeline=<model>` runs ingestion (+ augmentation where used) and that model end to end;
    `kedro run` runs everything and ends with the comparison report."""
    ingest = ingestion.create_pipeline()
    augment = augmentation.create_pipeline()
    pipelines: dict[str, Pipeline] = {"ingestion": ingest, "augmentation": ingest + augment}
    default = ingest + augment
    for name in MODEL_NAMES:
        model_pipeline = importlib.import_module(f"wood_anomaly.pipelines.{name}").create_pipeline()
        pipelines[name] = ingest + (augment if name in AUGMENTED_MODELS else Pipeline([])) + model_pipeline
        default += model_pipeline
    pipelines["inference"] = inference.create_pipeline()
    pipelines["batch_scoring"] = batch_scoring.create_pipeline()  # Spark: registered model over a board archive
    pipelines["reporting"] = reporting.create_pipeline()  # alone: reads whatever results are saved
    pipelines["tuning"] = tuning.create_pipeline()  # not in __default__: an Optuna study on train/good only
    pipelines["__default__"] = default + reporting.create_pipeline(models=list(MODEL_NAMES))  # after every model
    return pipelines
