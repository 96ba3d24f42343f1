"""efficientad pipeline: the shared model pipeline (train -> score -> evaluate) in namespace `efficientad`."""

from kedro.pipeline import Pipeline

from ..model_pipeline import ModelSpec, create_model_pipeline

SPEC = ModelSpec(
    name="efficientad",
    model_path="wood_anomaly.models.efficientad:EfficientAD",
    artifacts={"state": "state"},
    uses_augmentation=True,
)


def create_pipeline(**kwargs) -> Pipeline:
    return create_model_pipeline(SPEC)
