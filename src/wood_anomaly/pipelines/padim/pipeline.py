"""padim pipeline: the shared model pipeline (train -> score -> evaluate) in namespace `padim`."""

from kedro.pipeline import Pipeline

from wood_anomaly.models.registry import model_spec

from ..model_pipeline import create_model_pipeline

SPEC = model_spec("padim")  # wood_anomaly.models.registry


def create_pipeline(**kwargs) -> Pipeline:
    return create_model_pipeline(SPEC)
