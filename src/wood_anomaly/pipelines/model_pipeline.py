"""One pipeline shape for every model: train -> score -> evaluate, namespaced by the model's name.

What differs between models is their :class:`~wood_anomaly.models.registry.ModelSpec` (re-exported here).
"""

from __future__ import annotations

from functools import update_wrapper, partial

from kedro.pipeline import Pipeline, node, pipeline

from wood_anomaly.models.registry import ModelSpec

from .model_nodes import evaluate_model, reconstruction_samples, score_model, serving_model, train_model

SHARED_INPUTS = {"prepared_dataset"}
SHARED_PARAMETERS = {"params:runtime", "params:evaluation", "params:augmentation"}
REPORT_OUTPUTS = ["metrics", "mlflow_metrics", "roc_curve", "score_histogram", "heatmap_overlays", "confusion_matrix"]


def _named(func, name: str, **bound):
    """A partial that keeps a readable name (kedro-viz shows it) and the wrapped signature."""
    wrapped = partial(func, **bound)
    update_wrapper(wrapped, func)
    wrapped.__name__ = name  # type: ignore[attr-defined]
    return wrapped


def create_model_pipeline(spec: ModelSpec) -> Pipeline:
    keys = tuple(spec.artifacts)
    artifact_datasets = [spec.artifacts[k] for k in keys]
    extra_nodes = []
    if spec.reconstructs:
        extra_nodes.append(
            node(
                _named(reconstruction_samples, f"reconstruct_{spec.name}", model_path=spec.model_path, artifact_keys=keys),
                ["prepared_dataset", *artifact_datasets],
                "reconstruction_samples",
                name="reconstruction_samples",
            )
        )
    return pipeline(
        [
            *extra_nodes,
            node(
                _named(train_model, f"train_{spec.name}", model_name=spec.name, model_path=spec.model_path, artifact_keys=keys, uses_augmentation=spec.uses_augmentation),
                ["prepared_dataset", "params:model", "params:runtime", "params:augmentation", "params:evaluation"],
                [*artifact_datasets, "training_summary"],
                name="train",
            ),
            node(
                _named(score_model, f"score_{spec.name}", model_path=spec.model_path, artifact_keys=keys),
                ["prepared_dataset", "params:scoring", "params:runtime", "params:evaluation", *artifact_datasets],
                "scores",
                name="score",
            ),
            node(
                _named(evaluate_model, f"evaluate_{spec.name}", model_name=spec.name),
                ["prepared_dataset", "scores", "training_summary", "params:evaluation"],
                REPORT_OUTPUTS,
                name="evaluate",
            ),
            node(  # MLflow pyfunc `wood-anomaly-<model>`, a new registry version per run (wood_anomaly.serving)
                serving_model,
                ["prepared_dataset", "scores", "metrics", "params:scoring"],
                "registered_model",
                name="register",
            ),
        ],
        namespace=spec.name,
        inputs=SHARED_INPUTS,
        parameters=SHARED_PARAMETERS,
    )
