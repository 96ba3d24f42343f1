"""Tuning pipeline: ``kedro run --pipeline=tuning --params="tuning.model=patchcore,tuning.trials=30"``.

locate the raw folder -> load the train/good boards ONLY (no test file is ever opened) -> Optuna
study (each trial an MLflow child run) -> versioned best-parameter YAML, trial table and plot.
"""

from kedro.pipeline import Pipeline, node, pipeline

from wood_anomaly.models.registry import MODEL_NAMES

from ..ingestion.nodes import locate_raw_dataset
from .nodes import load_tuning_images, tune_model


def create_pipeline(**kwargs) -> Pipeline:
    return pipeline(
        [
            node(locate_raw_dataset, "params:dataset", "raw_dataset", name="locate_raw_dataset"),
            node(load_tuning_images, ["raw_dataset", "params:dataset"], "tuning_images", name="load_tuning_images"),
            node(
                tune_model,
                [
                    "tuning_images",
                    "params:tuning",
                    "params:runtime",
                    "params:evaluation",
                    "params:augmentation",
                    *(f"params:{m}.model" for m in MODEL_NAMES),
                ],
                ["tuning_best_params", "tuning_trials", "tuning_history_plot", "tuning_metrics"],
                name="tune_model",
            ),
        ]
    )
