"""padim pipeline: the shared model pipeline (train -> score -> evaluate) in namespace `padim`."""

from kedro.pipeline import Pipeline

from ..model_pipeline import ModelSpec, create_model_pipeline

SPEC = ModelSpec(
    name="padim",
    model_path="wood_anomaly.models.padim:Padim",
    artifacts={"state": "state"},
    uses_augmentation=False,
)


def create_pipeline(**kwargs) -> Pipeline:
    return create_model_pipeline(SPEC)
